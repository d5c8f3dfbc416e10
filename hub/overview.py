"""What the programme dashboard shows, computed from the roll-ups only (never from raw rows, except a
line's recent NG list): parts and yield today and over 30 days, NG by class, review-based escape and
false-reject rates, agents offline, model versions, and drift flags.

**Drift**: a line is compared with its own baseline (the `baseline_days` before today, from the day
roll-ups) over its `recent_minutes` (minute roll-ups). Its NG rate is flagged when it moved by more than
`min_ng_change` *and* by more than `z` binomial standard errors; its mean detection confidence when it
moved by more than `min_conf_change` and `z` standard errors. Fewer than `min_parts` parts in either
window: no verdict (a quiet line is not a drifting one).

Example:
    >>> ng_drift(base_parts=10_000, base_ng=200, parts=400, ng=80, z=4, min_change=0.02)
    (True, 0.02, 0.2)
    >>> ng_drift(base_parts=10_000, base_ng=200, parts=400, ng=10, z=4, min_change=0.02)[0]
    False
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from hub.config import DriftConfig
from hub.db import Database
from hub.registry import Registry


def ng_drift(
    base_parts: int, base_ng: int, parts: int, ng: int, z: float, min_change: float
) -> tuple[bool, float, float]:
    """(flagged, baseline NG rate, recent NG rate)."""
    p0 = base_ng / base_parts
    p1 = ng / parts
    se = math.sqrt(max(p0 * (1 - p0), 1e-9) / parts)
    return abs(p1 - p0) >= min_change and abs(p1 - p0) > z * se, round(p0, 4), round(p1, 4)


def conf_drift(
    base: tuple[float, float, float], recent: tuple[float, float, float], z: float, min_change: float
) -> tuple[bool, float, float]:
    """(flagged, baseline mean, recent mean) from (n, sum, sum of squares) of detection confidences."""
    n0, s0, q0 = base
    n1, s1, _ = recent
    m0, m1 = s0 / n0, s1 / n1
    var = max(q0 / n0 - m0 * m0, 1e-6)
    se = math.sqrt(var / n1)
    return abs(m1 - m0) >= min_change and abs(m1 - m0) > z * se, round(m0, 4), round(m1, 4)


def _only(only: tuple[str, str] | None) -> tuple[str, tuple[str, ...]]:
    """An extra WHERE clause (and its parameters) for one line, or nothing."""
    return ("", ()) if only is None else (" AND site = ? AND line = ?", only)


def _rate(num: float, den: float) -> float | None:
    return None if not den else num / den


class Overview:
    def __init__(self, db: Database, registry: Registry, drift: DriftConfig) -> None:
        self.db = db
        self.registry = registry
        self.drift_config = drift

    # -- per line -------------------------------------------------------------------------------
    def line_stats(
        self, now: float | None = None, only: tuple[str, str] | None = None
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Every line seen in the registry or the roll-ups: today, 30 days, classes, reviews, drift."""
        now = time.time() if now is None else now
        today = int(now // 86400)
        f, fp = _only(only)
        stats: dict[tuple[str, str], dict[str, Any]] = defaultdict(
            lambda: {
                "parts_today": 0,
                "ng_today": 0,
                "parts_30d": 0,
                "ng_30d": 0,
                "classes_30d": {},
                "reviews": {},
                "drift": {},
            }
        )
        for site, line, day, parts, ng in self.db.query(
            "SELECT site, line, day, parts, ng FROM rollup_day WHERE day > ?" + f, (today - 30, *fp)
        ):
            s = stats[(site, line)]
            s["parts_30d"] += int(parts)
            s["ng_30d"] += int(ng)
            if int(day) == today:
                s["parts_today"], s["ng_today"] = int(parts), int(ng)
        for site, line, name, count in self.db.query(
            "SELECT site, line, class_name, SUM(count) FROM rollup_day_class WHERE day > ?" + f + " "
            "GROUP BY site, line, class_name",
            (today - 30, *fp),
        ):
            stats[(site, line)]["classes_30d"][name] = int(count)
        for site, line, review, n in self.db.query(
            "SELECT site, line, review, COUNT(*) FROM review_events WHERE reviewed_at > ?" + f + " "
            "GROUP BY site, line, review",
            (now - 30 * 86400, *fp),
        ):
            stats[(site, line)]["reviews"][review] = int(n)
        for key, d in self.drift(now, only).items():
            stats[key]["drift"] = d
        for s in stats.values():
            s["yield_today"] = _rate(s["parts_today"] - s["ng_today"], s["parts_today"])
            s["yield_30d"] = _rate(s["parts_30d"] - s["ng_30d"], s["parts_30d"])
            r = s["reviews"]
            s["escape_rate"] = _rate(r.get("escape", 0), r.get("escape", 0) + r.get("confirmed_ok", 0))
            s["false_reject_rate"] = _rate(
                r.get("false_reject", 0), r.get("false_reject", 0) + r.get("confirmed_ng", 0)
            )
            s["drifting"] = bool(s["drift"].get("ng_flag") or s["drift"].get("conf_flag"))
        return dict(stats)

    def drift(
        self, now: float | None = None, only: tuple[str, str] | None = None
    ) -> dict[tuple[str, str], dict[str, Any]]:
        cfg = self.drift_config
        f, fp = _only(only)
        now = time.time() if now is None else now
        today = int(now // 86400)
        recent_from = int(now // 60) - cfg.recent_minutes
        base = {
            (s, ln): (int(p), int(g), int(n), float(cs), float(cq))
            for s, ln, p, g, n, cs, cq in self.db.query(
                "SELECT site, line, SUM(parts), SUM(ng), SUM(conf_n), SUM(conf_sum), SUM(conf_sq) FROM "
                "rollup_day "
                "WHERE day >= ? AND day < ?" + f + " GROUP BY site, line",
                (today - cfg.baseline_days, today, *fp),
            )
        }
        recent = {
            (s, ln): (int(p), int(g), int(n), float(cs), float(cq))
            for s, ln, p, g, n, cs, cq in self.db.query(
                "SELECT site, line, SUM(parts), SUM(ng), SUM(conf_n), SUM(conf_sum), SUM(conf_sq) FROM "
                "rollup_minute "
                "WHERE minute > ?" + f + " GROUP BY site, line",
                (recent_from, *fp),
            )
        }
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for key, (p1, g1, n1, s1, q1) in recent.items():
            d: dict[str, Any] = {"recent_parts": p1}
            b = base.get(key)
            if b is None or b[0] < cfg.min_parts or p1 < cfg.min_parts:
                d["verdict"] = "not enough parts"
                out[key] = d
                continue
            p0, g0, n0, s0, q0 = b
            d["ng_flag"], d["ng_base"], d["ng_recent"] = ng_drift(p0, g0, p1, g1, cfg.z, cfg.min_ng_change)
            if n0 >= cfg.min_parts and n1 >= cfg.min_parts // 4:
                d["conf_flag"], d["conf_base"], d["conf_recent"] = conf_drift(
                    (n0, s0, q0), (n1, s1, q1), cfg.z, cfg.min_conf_change
                )
            d["verdict"] = "drift" if d.get("ng_flag") or d.get("conf_flag") else "stable"
            out[key] = d
        return out

    # -- the pages -------------------------------------------------------------------------------
    def programme(self, now: float | None = None) -> dict[str, Any]:
        """Companies at a glance."""
        now = time.time() if now is None else now
        stats = self.line_stats(now)
        lines = self.registry.lines(now=now)
        agents = self.registry.agents(now)
        company_of_site = {a["site"]: a["company"] for a in agents if a["site"]}
        companies: dict[str, dict[str, Any]] = {}

        def company(name: str) -> dict[str, Any]:
            return companies.setdefault(
                name,
                {
                    "name": name,
                    "lines": 0,
                    "agents": 0,
                    "agents_offline": 0,
                    "parts_today": 0,
                    "ng_today": 0,
                    "parts_30d": 0,
                    "ng_30d": 0,
                    "classes_30d": defaultdict(int),
                    "reviews": defaultdict(int),
                    "models": set(),
                    "drifting": [],
                },
            )

        for a in agents:
            c = company(a["company"])
            c["agents"] += 1
            c["agents_offline"] += a["status"] in ("offline", "never seen", "late")
        known = set()
        refused = []
        for ln in lines:
            c = company(ln["company"])
            c["lines"] += 1
            known.add((ln["site"], ln["line"]))
            if ln["hub_model_status"] == "failed":
                refused.append(ln)
            if ln["model_name"]:
                c["models"].add(f"{ln['model_name']} {ln['model_version']}")
        for (site, line), s in stats.items():
            c = company(company_of_site.get(site, "(unregistered)"))
            if (site, line) not in known:
                c["lines"] += 1
            for k in ("parts_today", "ng_today", "parts_30d", "ng_30d"):
                c[k] += s[k]
            for name, n in s["classes_30d"].items():
                c["classes_30d"][name] += n
            for name, n in s["reviews"].items():
                c["reviews"][name] += n
            if s["drifting"]:
                c["drifting"].append(f"{site}/{line}")
        for c in companies.values():
            c["yield_today"] = _rate(c["parts_today"] - c["ng_today"], c["parts_today"])
            c["yield_30d"] = _rate(c["parts_30d"] - c["ng_30d"], c["parts_30d"])
            r = c["reviews"]
            c["escape_rate"] = _rate(r["escape"], r["escape"] + r["confirmed_ok"])
            c["false_reject_rate"] = _rate(r["false_reject"], r["false_reject"] + r["confirmed_ng"])
            ranked = sorted(c["classes_30d"].items(), key=lambda kv: -kv[1])
            c["top_classes"], c["other_classes"] = ranked[:3], ranked[3:]  # the page says what it leaves out
            c["models"] = sorted(c["models"])
        ordered = sorted(companies.values(), key=lambda c: c["name"])
        totals = {
            "companies": len([c for c in ordered if c["name"] != "(unregistered)"]),
            "lines": sum(c["lines"] for c in ordered),
            "agents_offline": sum(c["agents_offline"] for c in ordered),
            "parts_today": sum(c["parts_today"] for c in ordered),
            "drifting": sum(len(c["drifting"]) for c in ordered),
        }
        ng_today = sum(c["ng_today"] for c in ordered)
        totals["yield_today"] = _rate(totals["parts_today"] - ng_today, totals["parts_today"])
        return {"companies": ordered, "totals": totals, "refused": self._refused_models(refused)}

    def _refused_models(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Lines whose agent refused the model the hub assigns them: which model, and the agent's reason."""
        out = []
        for ln in lines:
            rows = self.db.query_dicts(
                "SELECT a.rollout_id, m.name, m.version, a.sha256 FROM assignments a "
                "LEFT JOIN models m ON m.sha256 = a.sha256 WHERE a.site = ? AND a.line = ?",
                (ln["site"], ln["line"]),
            )
            a = rows[0] if rows else {}
            out.append(
                {
                    "company": ln["company"],
                    "site": ln["site"],
                    "line": ln["line"],
                    "rollout_id": a.get("rollout_id"),
                    "model": " ".join(str(x) for x in (a.get("name"), a.get("version")) if x) or "–",
                    "error": ln["hub_model_error"] or "no reason given",
                }
            )
        return out

    def company(self, name: str, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        stats = self.line_stats(now)
        rows = []
        for ln in self.registry.lines(company=name, now=now):
            s = stats.get((ln["site"], ln["line"]))
            rows.append(
                {
                    **ln,
                    **(
                        s
                        or {
                            "parts_today": 0,
                            "parts_30d": 0,
                            "yield_today": None,
                            "yield_30d": None,
                            "classes_30d": {},
                            "drift": {},
                            "drifting": False,
                            "escape_rate": None,
                            "false_reject_rate": None,
                        }
                    ),
                }
            )
        return rows

    def line_days(
        self, site: str, line: str, days: int = 30, now: float | None = None
    ) -> list[dict[str, Any]]:
        """One entry per day of the last `days` (zeros where nothing was inspected), oldest first."""
        now = time.time() if now is None else now
        today = int(now // 86400)
        got = {
            int(d): (int(p), int(g))
            for d, p, g in self.db.query(
                "SELECT day, parts, ng FROM rollup_day WHERE site = ? AND line = ? AND day > ?",
                (site, line, today - days),
            )
        }
        out = []
        for day in range(today - days + 1, today + 1):
            parts, ng = got.get(day, (0, 0))
            out.append(
                {
                    "day": day,
                    "date": time.strftime("%m-%d", time.gmtime(day * 86400)),
                    "parts": parts,
                    "ng": ng,
                    "yield": _rate(parts - ng, parts),
                }
            )
        return out

    def line_hours(self, site: str, line: str, now: float | None = None) -> list[dict[str, Any]]:
        """The last 24 hours by hour, from the minute roll-ups."""
        now = time.time() if now is None else now
        hour_now = int(now // 3600)
        got: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for minute, parts, ng in self.db.query(
            "SELECT minute, parts, ng FROM rollup_minute WHERE site = ? AND line = ? AND minute >= ?",
            (site, line, (hour_now - 23) * 60),
        ):
            h = got[int(minute) // 60]
            h[0] += int(parts)
            h[1] += int(ng)
        return [
            {
                "hour": time.strftime("%H", time.gmtime(h * 3600)),
                "parts": got[h][0],
                "ng": got[h][1],
                "ng_rate": _rate(got[h][1], got[h][0]),
            }
            for h in range(hour_now - 23, hour_now + 1)
        ]

    def recent_ng(self, site: str, line: str, limit: int = 12) -> list[dict[str, Any]]:
        return self.db.query_dicts(
            "SELECT result_id, seq, part_id, ts, classes, max_conf, model_version, review FROM results "
            "WHERE site = ? AND line = ? AND verdict = 'NG' AND ts > ? ORDER BY ts DESC LIMIT ?",
            (site, line, time.time() - 30 * 86400, limit),
        )
