"""Results of a line with an anomaly model over OPC UA (issue 29): ResultContent carries the anomaly
score (the part's and each camera's, NaN without an anomaly model), the regions as defects of class
"anomaly", and the whole body in BodyJson. Real asyncua server and client."""

from __future__ import annotations

import json
import math

from asyncua import Client, ua

from contract.result import AnomalyScore, Defect, ModelInfo
from tests.opcua.lines import make_result
from tests.opcua.opcua_helpers import namespaces, vision_node

ANOMALY_MODEL = ModelInfo(name="tiles-anomaly", version="2")


async def test_anomaly_score_in_result_content_and_components(demo_server) -> None:
    body = make_result("line1", part_id="ANOM-1X")
    body.anomaly = [
        AnomalyScore(camera="top", score=0.83, image_threshold=0.61, pixel_threshold=0.7, anomalous=True,
                     model=ANOMALY_MODEL)
    ]
    body.defects.append(
        Defect(camera="top", class_name="anomaly", class_id=4, confidence=0.97, xyxy=[5, 6, 20, 9], area_px=3)
    )
    stored = demo_server.journal.append(body)
    plain = demo_server.journal.append(make_result("line1", part_id="PLAIN-1X"))
    timeout = ua.Variant(0, ua.VariantType.Int32)
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        results = await vision_node(client, "line1", "mv:ResultManagement")
        _, result, error = await results.call_method(
            f"{ns.mv}:GetResultById", ua.ResultIdDataType(Id=stored.result_id), timeout
        )
        assert error == 0
        content = result.ResultContent[0].Value
        assert content.AnomalyScore == 0.83
        assert [d.ClassName for d in content.Defects] == ["scratch", "anomaly"]
        assert json.loads(content.BodyJson)["anomaly"][0]["image_threshold"] == 0.61
        out = await results.call_method(
            f"{ns.mv}:GetResultComponentsById", ua.ResultIdDataType(Id=stored.result_id), timeout
        )
        (camera,) = [v.Value for v in out[15]][1:]
        assert camera.Camera == "top" and camera.AnomalyScore == 0.83
        _, other, _ = await results.call_method(
            f"{ns.mv}:GetResultById", ua.ResultIdDataType(Id=plain.result_id), timeout
        )
        assert math.isnan(other.ResultContent[0].Value.AnomalyScore)  # no anomaly model: NaN
