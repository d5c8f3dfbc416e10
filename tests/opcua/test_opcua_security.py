"""The production profile over TCP: SignAndEncrypt only, users with roles, trusted client certificates."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import (
    SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)
from pydantic import ValidationError

from contract.passwords import hash_password
from edge_agent.journal import ResultJournal
from edge_agent.publishers.opcua_publisher import JournalResultStore
from opcua.config import OpcUaServerConfig, UserConfig
from opcua.security import trust_certificate
from opcua.thread import ServerThread
from tests.opcua.opcua_helpers import CLIENT_URI, PASSWORDS, empty_args, namespaces, vision_node, wait_value

POLICIES = [SecurityPolicyBasic256Sha256, SecurityPolicyAes128Sha256RsaOaep, SecurityPolicyAes256Sha256RsaPss]


async def _client(
    server,
    pki,
    *,
    user: str | None,
    password: str | None = None,
    cert: tuple[Path, Path] | None = None,
    policy=SecurityPolicyBasic256Sha256,
) -> Client:
    client = Client(server.url, timeout=10)
    client.application_uri = CLIENT_URI
    cert_file, key_file = cert or pki.trusted_client
    await client.set_security(
        policy,
        str(cert_file),
        str(key_file),
        server_certificate=str(pki.server_cert),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    if user is not None:
        client.set_user(user)
        client.set_password(password if password is not None else PASSWORDS[user])
    return client


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.__name__.removeprefix("SecurityPolicy"))
async def test_operator_connects_with_each_policy_and_may_trigger(production_server, pki, policy):
    client = await _client(production_server, pki, user="mes", policy=policy)
    async with client:
        ns = await namespaces(client)
        auto = await vision_node(client, "secure1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine")
        job, error = await auto.call_method(
            f"{ns.mv}:StartSingleJob",
            ua.MeasIdDataType(Id=""),
            ua.PartIdDataType(Id=f"SEC-{policy.__name__}"),
            ua.RecipeIdExternalDataType(Id=""),
            ua.ProductIdDataType(Id=""),
            empty_args(),
        )
        assert error == 0 and job.Id
        trigger = await vision_node(client, "secure1", "app:PLC", "app:ResultAck")
        await trigger.write_value(ua.DataValue(ua.Variant(False, ua.VariantType.Boolean)))


async def test_only_sign_and_encrypt_endpoints_are_offered(production_server):
    endpoints = await Client(production_server.url).connect_and_get_server_endpoints()
    assert endpoints
    assert {e.SecurityMode for e in endpoints} == {ua.MessageSecurityMode.SignAndEncrypt}
    assert {e.SecurityPolicyUri.rsplit("#", 1)[-1] for e in endpoints} == {
        "Basic256Sha256",
        "Aes128_Sha256_RsaOaep",
        "Aes256_Sha256_RsaPss",
    }
    for endpoint in endpoints:
        assert [t.TokenType for t in endpoint.UserIdentityTokens] == [ua.UserTokenType.UserName]


async def test_viewer_reads_but_may_not_control(production_server, pki):
    client = await _client(production_server, pki, user="scada")
    async with client:
        ns = await namespaces(client)
        results = await vision_node(client, "secure1", "mv:ResultManagement")
        _, _, error = await results.call_method(
            f"{ns.mv}:GetResultById", ua.ResultIdDataType(Id="x"), ua.Variant(0, ua.VariantType.Int32)
        )
        assert error == -5  # the call ran (not found), i.e. viewers may query results
        components = await results.call_method(
            f"{ns.mv}:GetResultComponentsById",
            ua.ResultIdDataType(Id="x"),
            ua.Variant(0, ua.VariantType.Int32),
        )
        assert components[-1] == -5
        config = await vision_node(client, "secure1", "mv:ConfigurationManagement")
        listing = await config.call_method(
            f"{ns.mv}:GetConfigurationList",
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.Int32),
        )
        assert listing[-1] == 0
        recipes = await vision_node(client, "secure1", "mv:RecipeManagement")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # changes the line: operators only
            await recipes.call_method(
                f"{ns.mv}:UnprepareRecipe",
                ua.RecipeIdExternalDataType(Id=""),
                ua.RecipeIdInternalDataType(Id=""),
            )
        latest = await vision_node(client, "secure1", "mv:ResultManagement", "mv:Results", "app:LatestResult")
        assert await latest.read_value() is not None
        auto = await vision_node(client, "secure1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await auto.call_method(
                f"{ns.mv}:StartSingleJob",
                ua.MeasIdDataType(Id=""),
                ua.PartIdDataType(Id="V"),
                ua.RecipeIdExternalDataType(Id=""),
                ua.ProductIdDataType(Id=""),
                empty_args(),
            )
        trigger = await vision_node(client, "secure1", "app:PLC", "app:Trigger")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await trigger.write_value(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
    assert all(t["part_id"] != "V" for t in production_server.lines["secure1"].triggers)


async def test_wrong_password_is_refused(production_server, pki):
    client = await _client(production_server, pki, user="mes", password="not-the-password")
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == ua.StatusCodes.BadUserAccessDenied


async def test_anonymous_is_refused(production_server, pki):
    client = await _client(production_server, pki, user=None)
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code in (
        ua.StatusCodes.BadIdentityTokenRejected,
        ua.StatusCodes.BadIdentityTokenInvalid,
    )


async def test_no_session_over_a_channel_without_security(production_server):
    """The None channel stays open for discovery only: even a right password is refused on it."""
    client = Client(production_server.url, timeout=10)  # SecurityPolicy#None, as a hostile client would
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        session = ua.CreateSessionParameters()
        session.ClientDescription = ua.ApplicationDescription(
            ApplicationUri=CLIENT_URI, ApplicationType=ua.ApplicationType.Client
        )
        session.EndpointUrl = production_server.url
        session.SessionName = "plain"
        session.ClientNonce = b"n" * 32
        session.RequestedSessionTimeout = 60000
        await client.uaclient.create_session(session)
        activate = ua.ActivateSessionParameters()
        activate.LocaleIds = ["en"]
        activate.UserIdentityToken = ua.UserNameIdentityToken(
            PolicyId="username", UserName="mes", Password=PASSWORDS["mes"].encode()
        )
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await client.uaclient.activate_session(activate)
        assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
    finally:
        client.disconnect_socket()


async def test_untrusted_certificate_is_refused_kept_and_can_be_approved(production_server, pki):
    rejected_dir = pki.dir / "rejected"
    client = await _client(production_server, pki, user="mes", cert=pki.untrusted_client)
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == ua.StatusCodes.BadCertificateUntrusted
    kept = [p for p in rejected_dir.iterdir() if p.name.startswith("stranger_")]
    assert len(kept) == 1 and kept[0].read_bytes() == pki.untrusted_client[0].read_bytes()

    trusted = trust_certificate(kept[0], pki.dir / "trusted")  # what `edge-inspect opcua trust` does
    assert trusted.exists() and not kept[0].exists()
    try:
        client = await _client(production_server, pki, user="mes", cert=pki.untrusted_client)
        async with client:
            state = await (await vision_node(client, "secure1", "mv:VisionStateMachine")).get_child(
                "0:CurrentState"
            )
            await wait_value(state, ua.LocalizedText("Operational"))
    finally:
        trusted.unlink()


def test_config_refuses_plain_passwords_and_userless_production():
    with pytest.raises(ValidationError, match="password_hash"):
        UserConfig(name="mes", role="operator", password_hash="secret")
    with pytest.raises(ValidationError, match=r"opcua\.users"):
        OpcUaServerConfig(security="production", users=[])
    with pytest.raises(ValidationError, match="duplicate"):
        h = hash_password("x")
        OpcUaServerConfig(
            users=[
                UserConfig(name="a", role="viewer", password_hash=h),
                UserConfig(name="a", role="operator", password_hash=h),
            ]
        )
    with pytest.raises(ValidationError, match="role"):
        UserConfig(name="mes", role="admin", password_hash=hash_password("x"))


def test_production_without_a_certificate_fails_with_the_fix(tmp_path):
    config = OpcUaServerConfig(
        security="production",
        endpoint="opc.tcp://127.0.0.1:0/x/",
        pki_dir=tmp_path / "pki",
        users=[UserConfig(name="mes", role="operator", password_hash=hash_password("x" * 8))],
    )
    server = ServerThread(config, {}, JournalResultStore(ResultJournal(tmp_path / "j.sqlite")))
    with pytest.raises(FileNotFoundError, match="edge-inspect opcua cert"):
        server.start()


def test_demo_profile_warns_loudly_and_production_does_not(demo_server, production_server):
    banners = [r for r in demo_server.start_log if "security: none" in r.getMessage()]
    assert len(banners) == 1 and banners[0].levelno == logging.WARNING
    assert "NO ENCRYPTION, NO AUTHENTICATION" in banners[0].getMessage()
    assert not [r for r in production_server.start_log if "security: none" in r.getMessage()]
