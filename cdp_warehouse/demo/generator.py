"""Deterministic Segment-spec demo messages for the example SaaS project "acme".

The messages are plain dicts with the Segment HTTP Tracking API's camelCase field names
(``messageId``, ``anonymousId``, ``sentAt``, ...), the same shape ``cdp load`` and
``cdp serve`` accept (https://segment.com/docs/connections/spec/common/).

The data tells a story the example audiences can find at ``as_of = end``:

* visitors browse the marketing site anonymously (pages with only ``anonymousId``); about
  75% of them sign up: a ``Sign Up`` page, sometimes an ``alias``, an ``identify`` with both
  ids and the traits ``email``, ``plan``, ``first_name``, ``last_name``, ``company``, a
  ``Signed Up`` track and often a ``group`` call for their company; from then on browser
  messages carry both ids and backend messages (payments, sales-led upgrades) only
  ``userId``;
* plans change over time (identify + ``Subscription Upgraded`` / ``Subscription
  Downgraded``), paying users get ``Payment Processed`` monthly (or once, when billed
  annually);
* activity per user is lognormal (a few heavy users, a long tail), in sessions, more on
  weekdays and during business hours;
* a few percent of identified users are heavy Enterprise report builders in the last 30
  days (``high_value_user``), several percent are paying users who went silent 32-58 days
  before ``end`` (``churn_risk``), on top of whoever qualifies by chance;
* about 2% of messages come from a device whose clock is off by minutes: ``timestamp`` and
  ``sentAt`` are shifted by the same skew while ``receivedAt`` is right, so the loader's
  ``receivedAt - (sentAt - timestamp)`` correction recovers the true time.

Everything is drawn from one ``random.Random(seed)``: the same arguments give the same
messages, in the same order.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

__all__ = ["generate_events", "write_jsonl"]

_MINUTE = 60.0
_HOUR = 3_600.0
_DAY = 86_400.0

# Every true event time stays this far before `end`, so that sentAt and receivedAt (at most
# ~36 s later) are before `end` too.
_END_MARGIN = 120.0

_WEB_LIBRARY = {"name": "analytics.js", "version": "4.1.0"}
_SERVER_LIBRARY = {"name": "analytics-python", "version": "2.3.2"}

_USER_AGENTS = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.0.0 Safari/537.36"
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.0.0 Safari/537.36"
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15"
    ),
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0",
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0"
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.0.0 Safari/537.36"
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
    ),
)
_USER_AGENT_CUM = tuple(accumulate((30, 22, 14, 10, 8, 4, 12)))
_LOCALES = ("en-US", "en-US", "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP")
_IP_FIRST_OCTETS = (24, 50, 64, 67, 71, 73, 76, 81, 86, 92, 98, 104, 108, 136, 142, 151, 185, 203)

# fmt: off
_FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ben", "Carla", "Chen", "Dana", "Diego", "Elena", "Emeka", "Fatima",
    "Felix", "Grace", "Hana", "Hugo", "Ines", "Ivan", "Jonas", "Julia", "Kai", "Kenji", "Lara",
    "Leo", "Maya", "Mateo", "Nadia", "Noah", "Olga", "Omar", "Priya", "Quinn", "Rosa", "Sam",
    "Sofia", "Tariq", "Uma", "Victor", "Wen", "Yara", "Zoe",
)
_LAST_NAMES = (
    "Adams", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Quintero", "Rossi",
    "Schmidt", "Tanaka", "Usman", "Varga", "Weber", "Xu", "Yilmaz", "Zhang", "Novak", "Silva",
    "Murphy", "Kim",
)
_TITLES = (
    "Data Analyst", "Head of Growth", "Product Manager", "Marketing Ops Manager", "CTO",
    "Analytics Engineer", "VP Sales", "Customer Success Lead", "Founder", "BI Developer",
)
_COMPANY_PREFIXES = (
    "Acorn", "Bluefin", "Cobalt", "Driftwood", "Ember", "Fjord", "Granite", "Harbor", "Indigo",
    "Juniper", "Kestrel", "Lumen", "Meridian", "Northwind", "Orchid", "Pinnacle", "Quartz",
    "Redwood", "Summit", "Tidal", "Umbra", "Vertex", "Willow", "Xenon", "Yonder", "Zephyr",
    "Atlas", "Beacon", "Cascade", "Delta",
)
_COMPANY_SUFFIXES = (
    "Labs", "Analytics", "Logistics", "Health", "Retail", "Systems", "Foods", "Energy",
    "Media", "Robotics", "Capital", "Travel", "Software", "Bio", "Apparel",
)
_INDUSTRIES = (
    "Software", "Retail", "Healthcare", "Financial Services", "Manufacturing", "Media",
    "Logistics", "Education", "Travel", "Energy",
)
# fmt: on

_APP_HOST = "https://app.acme.io"
_SITE_HOST = "https://www.acme.io"
# (name, host, path, weight)
_APP_PAGES = (
    ("Dashboard", _APP_HOST, "/dashboard", 40),
    ("Reports", _APP_HOST, "/reports", 25),
    ("Settings", _APP_HOST, "/settings", 8),
    ("Integrations", _APP_HOST, "/integrations", 6),
    ("Team", _APP_HOST, "/settings/team", 4),
    ("Alerts", _APP_HOST, "/alerts", 4),
    ("Billing", _APP_HOST, "/settings/billing", 3),
    ("Pricing", _SITE_HOST, "/pricing", 2),
)
_APP_PAGE_CUM = tuple(accumulate(page[3] for page in _APP_PAGES))
_MARKETING_PAGES = (
    ("Home", _SITE_HOST, "/", 35),
    ("Pricing", _SITE_HOST, "/pricing", 25),
    ("Features", _SITE_HOST, "/features", 15),
    ("Blog", _SITE_HOST, "/blog", 12),
    ("Customers", _SITE_HOST, "/customers", 5),
    ("Docs", _SITE_HOST, "/docs", 8),
)
_MARKETING_PAGE_CUM = tuple(accumulate(page[3] for page in _MARKETING_PAGES))
_PAGES_BY_NAME = {page[0]: page for page in _APP_PAGES + _MARKETING_PAGES}
_PAGES_BY_NAME["Sign Up"] = ("Sign Up", _SITE_HOST, "/signup", 0)

# fmt: off
_EXTERNAL_REFERRERS = (
    "https://www.google.com/", "https://www.google.com/", "https://www.bing.com/",
    "https://www.linkedin.com/", "https://news.ycombinator.com/", "https://twitter.com/", "",
)

# Product events of an in-app session and their weights per plan (Enterprise customers build
# more reports). The lifecycle events (Signed Up, Subscription Upgraded/Downgraded, Payment
# Processed) are emitted where the story needs them.
_TRACK_TABLE = (
    # event                   free  growth  enterprise
    ("Dashboard Viewed",      28,   24,     22),
    ("Report Generated",      10,   16,     22),
    ("Search Performed",      13,   12,     11),
    ("Export Downloaded",     4,    6,      8),
    ("Report Shared",         3,    5,      6),
    ("Alert Created",         2,    3,      4),
    ("Invite Sent",           3,    3,      3),
    ("Integration Connected", 2,    2,      2),
    ("Support Contacted",     2.5,  2.5,    2.5),
    ("Login",                 1,    1,      1),
)
_TRACK_EVENTS = tuple(row[0] for row in _TRACK_TABLE)
_TRACK_CUM: dict[str, tuple[float, ...]] = {
    plan: tuple(accumulate(float(row[column]) for row in _TRACK_TABLE))
    for column, plan in enumerate(("free", "growth", "enterprise"), start=1)
}
_PAGE_SHARE = 0.42  # of in-app messages; the rest are track calls

_PLAN_RANK = {"free": 0, "growth": 1, "enterprise": 2}
_GROWTH_PRICES = (49.0, 99.0, 149.0)
_ENTERPRISE_PRICES = (499.0, 999.0, 1499.0, 2499.0)
_INTEGRATIONS = ("salesforce", "hubspot", "snowflake", "bigquery", "stripe", "slack", "zendesk")
_METRICS = ("active_users", "revenue", "conversion_rate", "churn_rate", "page_load_ms")

# Relative likelihood of activity per UTC hour (the customer base is mostly in the Americas
# and Europe), used by rejection sampling; weekends count a third.
_HOUR_ACCEPT = (
    0.35, 0.3, 0.25, 0.2, 0.15, 0.15, 0.2, 0.35, 0.55, 0.75, 0.85, 0.9,
    0.95, 1.0, 1.0, 1.0, 1.0, 1.0, 0.95, 0.9, 0.8, 0.65, 0.5, 0.4,
)
# fmt: on


@dataclass(slots=True)
class _Device:
    anonymous_id: str
    ip: str
    user_agent: str
    locale: str


@dataclass(slots=True)
class _Company:
    group_id: str
    name: str
    domain: str
    employees: int
    industry: str


@dataclass(slots=True)
class _User:
    kind: str  # "anonymous" | "normal" | "high_value" | "churn_risk"
    device: _Device
    first_seen: float
    last_active: float
    weight: float = 1.0
    budget: int = 1
    user_id: str | None = None
    signup: float = 0.0
    traits: dict[str, Any] = field(default_factory=dict)
    company: _Company | None = None
    plan_times: list[float] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)  # per plan change (plans[1:])
    prices: dict[str, float] = field(default_factory=dict)
    annual: bool = False
    pre_sessions: list[tuple[float, int]] = field(default_factory=list)
    alias: bool = False
    group: bool = False
    payments: list[tuple[float, str]] = field(default_factory=list)
    trait_update_at: float | None = None
    device2: _Device | None = None
    device2_at: float = 0.0
    report_sessions: list[tuple[float, int]] = field(default_factory=list)

    def plan_at(self, t: float) -> str:
        return self.plans[max(0, bisect.bisect_right(self.plan_times, t) - 1)]

    def fixed_messages(self) -> int:
        """Messages that do not come out of the activity budget."""
        if self.user_id is None:
            return 0
        count = sum(n for _, n in self.pre_sessions)
        count += 3 + self.alias + self.group  # Sign Up page, identify, Signed Up
        for trigger in self.triggers:
            count += 2 if trigger == "sales" else 3  # (Billing page) + identify + track
        count += len(self.payments)
        count += self.trait_update_at is not None
        count += 2 if self.device2 is not None else 0  # identify + Dashboard page
        count += sum(n for _, n in self.report_sessions)
        return count


class _Generator:
    def __init__(self, n_events: int, seed: int, end: datetime, days: int) -> None:
        self.rng = random.Random(seed)
        self.n_events = n_events
        self.end = end.timestamp()
        self.start = self.end - days * _DAY
        self.limit = self.end - _END_MARGIN
        self.emails: set[str] = set()

    # ------------------------------------------------------------------ small helpers

    def between(self, low: float, high: float) -> float:
        return low + (high - low) * self.rng.random() if high > low else low

    def clamp(self, t: float) -> float:
        return min(max(t, self.start + _MINUTE), self.limit)

    def step(self, t: float, gap: float) -> float:
        """t + gap, or a smaller step when that would run into the end margin."""
        if t + gap <= self.limit:
            return t + gap
        return t + max(0.0, self.limit - t) * self.rng.random()

    def busy_time(self, low: float, high: float) -> float:
        """A time in [low, high], likelier on weekdays and in business hours."""
        r = self.rng
        t = low
        for _ in range(6):
            t = low + (high - low) * r.random() if high > low else low
            day, second = divmod(int(t), 86_400)
            accept = _HOUR_ACCEPT[second // 3_600]
            if (day + 3) % 7 >= 5:  # 1970-01-01 was a Thursday
                accept *= 0.35
            if r.random() < accept:
                return t
        return t

    def uuid4(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def device(self) -> _Device:
        r = self.rng
        ip = (
            f"{r.choice(_IP_FIRST_OCTETS)}.{r.randrange(256)}.{r.randrange(256)}."
            f"{r.randrange(1, 255)}"
        )
        user_agent = r.choices(_USER_AGENTS, cum_weights=_USER_AGENT_CUM)[0]
        return _Device(self.uuid4(), ip, user_agent, r.choice(_LOCALES))

    def skew(self) -> float:
        """Per session: ~2% of devices report a clock that is off by 2-90 minutes."""
        r = self.rng
        if r.random() >= 0.02:
            return 0.0
        return (1.0 if r.random() < 0.5 else -1.0) * r.uniform(2.0, 90.0) * _MINUTE

    # ------------------------------------------------------------------ planning

    def companies(self, n: int) -> list[_Company]:
        r = self.rng
        names = [f"{p} {s}" for p in _COMPANY_PREFIXES for s in _COMPANY_SUFFIXES]
        r.shuffle(names)
        out = []
        for i in range(n):
            name = names[i % len(names)]
            if i >= len(names):
                name = f"{name} {i // len(names) + 1}"
            domain = name.lower().replace(" ", "") + ".com"
            employees = int(r.lognormvariate(math.log(80), 1.3)) + 2
            out.append(_Company(f"g_{i + 1:05d}", name, domain, employees, r.choice(_INDUSTRIES)))
        return out

    def person(self, company: _Company) -> dict[str, Any]:
        r = self.rng
        first, last = r.choice(_FIRST_NAMES), r.choice(_LAST_NAMES)
        base = f"{first}.{last}".lower()
        email = f"{base}@{company.domain}"
        n = 2
        while email in self.emails:  # one email per person: email is an identity key
            email = f"{base}{n}@{company.domain}"
            n += 1
        self.emails.add(email)
        return {
            "email": email,
            "first_name": first,
            "last_name": last,
            "company": company.name,
            "title": r.choice(_TITLES),
        }

    def plan(self) -> list[_User]:
        r = self.rng
        span = self.end - self.start
        n_users = max(12, round(self.n_events / 100))
        n_identified = round(n_users * 0.75)
        n_high_value = max(1, round(n_identified * 0.02))
        # Churn risk needs activity 60..30 days before `end` and room for a signup before it.
        n_churn = max(1, round(n_identified * 0.05)) if span >= 40 * _DAY else 0
        kinds = (
            ["high_value"] * n_high_value
            + ["churn_risk"] * n_churn
            + ["normal"] * (n_identified - n_high_value - n_churn)
            + ["anonymous"] * (n_users - n_identified)
        )
        r.shuffle(kinds)

        companies = self.companies(max(3, n_identified // 3))
        company_cum = list(accumulate(1.0 / (i + 1) ** 0.8 for i in range(len(companies))))

        users = []
        for kind in kinds:
            device = self.device()
            if kind == "anonymous":
                first = self.busy_time(self.start + _MINUTE, self.limit - _HOUR)
                last = min(first + r.random() * r.uniform(0, 21) * _DAY, self.limit - _HOUR)
                user = _User(kind, device, first, max(first, last))
                user.weight = r.lognormvariate(0, 0.9) * 0.12
                users.append(user)
                continue
            company = companies[r.choices(range(len(companies)), cum_weights=company_cum)[0]]
            users.append(self.plan_identified(kind, device, company))

        # userIds in signup order, like an auto-increment key.
        identified = sorted((u for u in users if u.kind != "anonymous"), key=lambda u: u.signup)
        for number, user in enumerate(identified, start=1):
            user.user_id = f"u_{number:06d}"

        self.allocate(users)
        users.sort(key=lambda u: u.first_seen)
        return users

    def plan_identified(self, kind: str, device: _Device, company: _Company) -> _User:
        r = self.rng
        lo = self.start + _HOUR
        if kind == "high_value":
            signup = self.between(lo, self.end - 35 * _DAY)
            last_active = self.end - _HOUR - min(r.expovariate(1 / _DAY), 5 * _DAY)
        elif kind == "churn_risk":
            last_active = self.end - r.uniform(32, 58) * _DAY
            signup = self.between(lo, last_active - 7 * _DAY)
        else:
            signup = lo + max(0.0, self.end - 2 * _DAY - lo) * r.random() ** 1.4
            if r.random() < 0.72:  # still active: last seen in the last days
                last_active = self.end - _HOUR - min(r.expovariate(1 / (2 * _DAY)), 12 * _DAY)
            else:
                last_active = self.between(signup, self.end - 8 * _HOUR)
        signup = self.clamp(signup)
        last_active = self.clamp(max(last_active, signup + 30 * _MINUTE))
        # Anonymous browsing before signup: 0-3 short sessions on the marketing site.
        room = signup - self.start - _MINUTE
        n_pre = r.choices((0, 1, 2, 3), cum_weights=(15, 60, 85, 100))[0] if room > _HOUR else 0
        lookback = 20 * _MINUTE + r.random() * r.uniform(0, 6) * _DAY
        if lookback > room:
            lookback = 20 * _MINUTE + (room - 20 * _MINUTE) * r.random() if n_pre else 0.0
        first_seen = signup - lookback

        user = _User(kind, device, first_seen, last_active, signup=signup, company=company)
        user.traits = self.person(company)
        activity_days = (last_active - signup) / _DAY
        share = max(0.02, activity_days / max(1.0, (self.end - self.start) / _DAY))
        user.weight = r.lognormvariate(0, 1.1) * share**0.6 * (2.0 if kind == "high_value" else 1.0)

        pre_high = max(first_seen, signup - 15 * _MINUTE)
        times = sorted(
            [first_seen] + [self.between(first_seen, pre_high) for _ in range(n_pre - 1)]
        )
        user.pre_sessions = [(t, r.randint(1, 4)) for t in times[:n_pre]]
        user.alias = r.random() < 0.3
        user.group = r.random() < 0.7

        # Plan history: the first plan at signup, then upgrades and the odd downgrade.
        path: list[str]
        paths: tuple[str, ...]
        if kind == "high_value":
            paths = ("enterprise", "growth enterprise", "free growth enterprise")
            path = r.choices(paths, cum_weights=(55, 85, 100))[0].split()
        elif kind == "churn_risk":
            paths = ("growth", "enterprise", "free growth", "growth enterprise")
            path = r.choices(paths, cum_weights=(45, 60, 90, 100))[0].split()
        else:
            path = [r.choices(("free", "growth", "enterprise"), cum_weights=(60, 90, 100))[0]]
            if path[-1] == "free" and r.random() < 0.2:
                path.append("growth")
            if path[-1] == "growth" and r.random() < 0.1:
                path.append("enterprise")
            if len(path) == 1 and path[0] != "free" and r.random() < 0.06:
                path.append("growth" if path[0] == "enterprise" else "free")
        if last_active - signup > 3 * _DAY:
            low, high = signup + 2 * _DAY, last_active - _DAY
        else:
            low, high = signup + 10 * _MINUTE, last_active
        changes = sorted(self.between(low, high) for _ in path[1:])
        user.plans = path
        user.plan_times = [signup, *changes]
        for old, new in pairwise(path):
            if _PLAN_RANK[new] < _PLAN_RANK[old]:
                user.triggers.append("self-service")
            elif old == "free" and new == "growth":
                user.triggers.append("self-service" if r.random() < 0.85 else "sales")
            elif old == "growth":
                user.triggers.append("sales" if r.random() < 0.7 else "self-service")
            else:
                user.triggers.append("sales")
        user.prices = {
            "free": 0.0,
            "growth": r.choice(_GROWTH_PRICES),
            "enterprise": r.choice(_ENTERPRISE_PRICES),
        }

        # Billing. Churn-risk users pay yearly: they are still customers, just silent, and a
        # monthly backend "Payment Processed" would count as recent activity.
        user.annual = kind == "churn_risk" or r.random() < 0.15
        period = 365 * _DAY if user.annual else 30 * _DAY
        for i, plan in enumerate(path):
            if plan == "free":
                continue
            t = user.plan_times[i] + r.uniform(2, 10) * _MINUTE
            stop = user.plan_times[i + 1] if i + 1 < len(path) else last_active
            while t < stop and t < self.limit:
                user.payments.append((t, plan))
                t += period + r.uniform(-2, 2) * _HOUR

        if r.random() < 0.15 and last_active - signup > 2 * _DAY:
            user.trait_update_at = self.between(signup + _DAY, last_active)
        if r.random() < 0.1 and last_active - signup > 7 * _DAY:
            user.device2 = self.device()
            user.device2_at = self.between(signup + _DAY, last_active - _HOUR)

        if kind == "high_value":
            # 12-30 reports in the last 30 days, in sessions of 1-3.
            total = r.randint(12, 30)
            low = max(signup + _HOUR, self.end - 29 * _DAY)
            high = max(low, self.limit - _HOUR)
            while total > 0:
                n = min(total, r.randint(1, 3))
                user.report_sessions.append((self.busy_time(low, high), n))
                total -= n
        return user

    def allocate(self, users: list[_User]) -> None:
        """Split what the lifecycle messages leave of n_events over users by weight."""
        fixed = sum(u.fixed_messages() for u in users)
        spare = max(0, self.n_events - fixed - len(users))  # every user gets at least one
        total_weight = sum(u.weight for u in users) or 1.0
        shares = [spare * u.weight / total_weight for u in users]
        floors = [int(s) for s in shares]
        leftover = spare - sum(floors)
        by_fraction = sorted(range(len(users)), key=lambda i: floors[i] - shares[i])
        for i in by_fraction[:leftover]:
            floors[i] += 1
        for user, extra in zip(users, floors):
            user.budget = 1 + extra

    # ------------------------------------------------------------------ messages

    def emit(
        self,
        out: list[dict[str, Any]],
        mtype: str,
        t: float,
        body: dict[str, Any],
        *,
        user_id: str | None = None,
        device: _Device | None = None,
        skew: float = 0.0,
        email: str | None = None,
    ) -> None:
        """Append one message: from ``device`` (analytics.js), else from the backend."""
        r = self.rng
        t = self.clamp(t)
        # SDKs batch and retry: a few ms to seconds between the event and its sending.
        sent = t + 0.004 + min(r.lognormvariate(-1.5, 1.3), 30.0)
        received = sent + 0.015 + min(r.lognormvariate(-2.3, 0.6), 5.0)
        if skew:  # a wrong device clock moves timestamp and sentAt, never receivedAt
            if t + skew >= self.limit:
                skew = -abs(skew)
            if t + skew < self.start:
                skew = abs(skew) if t + abs(skew) < self.limit else 0.0
        context: dict[str, Any]
        if device is None:
            message: dict[str, Any] = {"messageId": self.uuid4(), "type": mtype}
            context = {"library": dict(_SERVER_LIBRARY)}
        else:
            message = {"messageId": f"ajs-next-{r.getrandbits(128):032x}", "type": mtype}
            context = {
                "library": dict(_WEB_LIBRARY),
                "ip": device.ip,
                "userAgent": device.user_agent,
                "locale": device.locale,
            }
            if email is not None:
                context["traits"] = {"email": email}
        if user_id is not None:
            message["userId"] = user_id
        if device is not None:
            message["anonymousId"] = device.anonymous_id
        message.update(body)
        message["context"] = context
        message["timestamp"] = _iso(t + skew)
        message["sentAt"] = _iso(sent + skew)
        message["receivedAt"] = _iso(received)
        out.append(message)

    def page_body(self, name: str, referrer: str) -> dict[str, Any]:
        _, host, path, _ = _PAGES_BY_NAME[name]
        return {
            "name": name,
            "properties": {
                "path": path,
                "referrer": referrer,
                "search": "",
                "title": f"{name} | Acme",
                "url": host + path,
            },
        }

    def marketing_session(
        self, out: list[dict[str, Any]], device: _Device, t: float, n: int
    ) -> None:
        """n pages on the marketing site from a visitor not (yet) identified."""
        r = self.rng
        skew = self.skew()
        referrer = r.choice(_EXTERNAL_REFERRERS)
        for _ in range(n):
            page = r.choices(_MARKETING_PAGES, cum_weights=_MARKETING_PAGE_CUM)[0]
            self.emit(out, "page", t, self.page_body(page[0], referrer), device=device, skew=skew)
            referrer = page[1] + page[2]
            t = self.step(t, min(r.expovariate(1 / 50), 300) + 1)

    def identify_traits(self, user: _User, t: float) -> dict[str, Any]:
        traits = {k: user.traits[k] for k in ("email", "first_name", "last_name", "company")}
        traits["plan"] = user.plan_at(t)
        return traits

    def track_properties(self, event: str, plan: str) -> dict[str, Any]:
        r = self.rng
        if event == "Report Generated":
            kind = r.choices(("usage", "performance", "custom"), cum_weights=(50, 80, 100))[0]
            sources = 1 + min(int(r.expovariate(1 / (3.0 if kind == "custom" else 1.5))), 24)
            millis = r.lognormvariate(math.log(650), 0.7) * (1 + 0.4 * sources)
            return {
                "report_type": kind,
                "data_sources_count": sources,
                "time_to_generate_ms": round(millis, 1),
            }
        if event == "Dashboard Viewed":
            return {
                "dashboard_id": f"dash_{r.randrange(1, 60):03d}",
                "widgets_count": r.randint(2, 16),
            }
        if event == "Search Performed":
            return {"query_length": r.randint(2, 40), "results_count": int(r.expovariate(1 / 25))}
        if event == "Export Downloaded":
            fmt = r.choices(("csv", "xlsx", "pdf"), cum_weights=(55, 80, 100))[0]
            return {"format": fmt, "row_count": int(r.lognormvariate(math.log(800), 1.2)) + 1}
        if event == "Report Shared":
            return {
                "report_type": r.choice(("usage", "performance", "custom")),
                "share_method": r.choice(("link", "email", "slack")),
                "recipients_count": r.randint(1, 12),
            }
        if event == "Alert Created":
            return {
                "metric": r.choice(_METRICS),
                "threshold": round(r.uniform(1, 500), 2),
                "frequency": r.choice(("hourly", "daily", "weekly")),
            }
        if event == "Invite Sent":
            role = r.choices(("member", "viewer", "admin"), cum_weights=(60, 90, 100))[0]
            return {"invitee_role": role, "invite_method": r.choice(("email", "link"))}
        if event == "Integration Connected":
            return {"integration": r.choice(_INTEGRATIONS)}
        if event == "Support Contacted":
            return {
                "channel": r.choices(("chat", "email", "phone"), cum_weights=(55, 90, 100))[0],
                "topic": r.choice(("billing", "bug", "how-to", "integrations", "account")),
            }
        if event == "Login":
            methods = (
                ("sso", "google", "password") if plan == "enterprise" else ("password", "google")
            )
            return {"method": r.choice(methods)}
        raise AssertionError(event)  # pragma: no cover

    def app_session(
        self, out: list[dict[str, Any]], user: _User, device: _Device, t: float, n: int
    ) -> None:
        """n in-app messages: pages and tracks, sometimes an identify right after Login."""
        r = self.rng
        skew = self.skew()
        user_id, email = user.user_id, user.traits["email"]
        plan = user.plan_at(t)
        cum = _TRACK_CUM[plan]
        i = 0
        while i < n:
            # analytics.js sends cached traits along on some calls.
            mail = email if r.random() < 0.15 else None
            if i == 0 and r.random() < 0.3:
                event = "Login"
            elif r.random() < _PAGE_SHARE:
                event = ""
            else:
                event = r.choices(_TRACK_EVENTS, cum_weights=cum)[0]
            if event:
                mtype = "track"
                body = {"event": event, "properties": self.track_properties(event, plan)}
            else:
                mtype = "page"
                page = r.choices(_APP_PAGES, cum_weights=_APP_PAGE_CUM)[0]
                body = self.page_body(page[0], _APP_HOST + "/dashboard" if i else "")
            self.emit(out, mtype, t, body, user_id=user_id, device=device, skew=skew, email=mail)
            i += 1
            t = self.step(t, min(r.expovariate(1 / 40), 600) + 0.5)
            if event == "Login" and i < n and r.random() < 0.25:
                # Apps commonly re-identify on login with the full, current traits.
                body = {"traits": self.identify_traits(user, t)}
                self.emit(out, "identify", t, body, user_id=user_id, device=device, skew=skew)
                i += 1
                t = self.step(t, r.uniform(0.05, 2.0))

    def signup(self, out: list[dict[str, Any]], user: _User) -> None:
        """Sign Up page (still anonymous), [alias], identify, Signed Up, [group]."""
        r = self.rng
        skew = self.skew()
        device, user_id, email = user.device, user.user_id, user.traits["email"]
        t = user.signup
        body = self.page_body("Sign Up", _SITE_HOST + "/pricing")
        self.emit(out, "page", t, body, device=device, skew=skew)
        t += r.uniform(20, 180)
        if user.alias:
            body = {"previousId": device.anonymous_id}
            self.emit(out, "alias", t, body, user_id=user_id, device=device, skew=skew)
            t += r.uniform(0.05, 1.0)
        traits = self.identify_traits(user, t)
        traits["title"] = user.traits["title"]
        traits["created_at"] = _iso(user.signup)
        self.emit(out, "identify", t, {"traits": traits}, user_id=user_id, device=device, skew=skew)
        t += r.uniform(0.05, 1.0)
        method = r.choice(("email", "google"))
        body = {
            "event": "Signed Up",
            "properties": {"plan": user.plans[0], "signup_method": method},
        }
        self.emit(out, "track", t, body, user_id=user_id, device=device, skew=skew, email=email)
        if user.group and user.company is not None:
            t += r.uniform(0.05, 1.0)
            company = user.company
            traits = {
                "name": company.name,
                "employees": company.employees,
                "industry": company.industry,
                "website": f"https://{company.domain}",
            }
            body = {"groupId": company.group_id, "traits": traits}
            self.emit(out, "group", t, body, user_id=user_id, device=device, skew=skew, email=email)

    def plan_changes(self, out: list[dict[str, Any]], user: _User) -> None:
        """identify + Subscription Upgraded/Downgraded, from the app or from the backend."""
        r = self.rng
        device, user_id, email = user.device, user.user_id, user.traits["email"]
        for i, trigger in enumerate(user.triggers):
            t = user.plan_times[i + 1]
            old, new = user.plans[i], user.plans[i + 1]
            upgrade = _PLAN_RANK[new] > _PLAN_RANK[old]
            props: dict[str, Any] = {
                "previous_plan": old,
                "new_plan": new,
                "mrr_change": round(user.prices[new] - user.prices[old], 2),
            }
            if upgrade:
                props["triggered_by"] = trigger
            event = "Subscription Upgraded" if upgrade else "Subscription Downgraded"
            body = {"event": event, "properties": props}
            if trigger == "sales":  # deals closed by sales are recorded by the backend
                self.emit(out, "identify", t, {"traits": {"plan": new}}, user_id=user_id)
                self.emit(out, "track", t + r.uniform(0.5, 5), body, user_id=user_id)
            else:
                skew = self.skew()
                page = self.page_body("Billing", _APP_HOST + "/settings")
                t0 = t - r.uniform(30, 300)
                self.emit(out, "page", t0, page, user_id=user_id, device=device, skew=skew)
                traits = {"traits": {"email": email, "plan": new}}
                self.emit(out, "identify", t, traits, user_id=user_id, device=device, skew=skew)
                t1 = t + r.uniform(0.05, 1.0)
                self.emit(
                    out, "track", t1, body, user_id=user_id, device=device, skew=skew, email=email
                )

    def payments(self, out: list[dict[str, Any]], user: _User) -> None:
        """Payment Processed from the backend, monthly or (for annual billing) yearly."""
        r = self.rng
        for t, plan in user.payments:
            price = user.prices[plan]
            revenue = round(price * 12 * 0.85, 2) if user.annual else price
            method_cum = (50, 60, 95, 100) if plan == "enterprise" else (75, 90, 95, 100)
            method = r.choices(("card", "ach", "invoice", "paypal"), cum_weights=method_cum)[0]
            props = {
                # Real SDK payloads sometimes carry numbers as strings.
                "revenue": f"{revenue:.2f}" if r.random() < 0.05 else revenue,
                "currency": "USD",
                "payment_method": method,
                "invoice_id": f"in_{r.getrandbits(64):016x}",
                "plan": plan,
                "billing_period": "annual" if user.annual else "monthly",
            }
            body = {"event": "Payment Processed", "properties": props}
            self.emit(out, "track", t, body, user_id=user.user_id)

    def identified_messages(self, user: _User) -> list[dict[str, Any]]:
        r = self.rng
        out: list[dict[str, Any]] = []
        device, user_id, email = user.device, user.user_id, user.traits["email"]

        for t, n in user.pre_sessions:
            self.marketing_session(out, device, t, n)
        self.signup(out, user)
        self.plan_changes(out, user)
        self.payments(out, user)

        if user.trait_update_at is not None:  # an identify without plan
            traits = {"traits": {"email": email, "title": r.choice(_TITLES)}}
            t, skew = user.trait_update_at, self.skew()
            self.emit(out, "identify", t, traits, user_id=user_id, device=device, skew=skew)

        if user.device2 is not None:  # logs in from a second browser
            skew, t, other = self.skew(), user.device2_at, user.device2
            traits = {"traits": self.identify_traits(user, t)}
            self.emit(out, "identify", t, traits, user_id=user_id, device=other, skew=skew)
            page = self.page_body("Dashboard", "")
            t = self.step(t, r.uniform(0.5, 3))
            self.emit(out, "page", t, page, user_id=user_id, device=other, skew=skew)

        for t, n in user.report_sessions:
            skew = self.skew()
            for _ in range(n):
                props = self.track_properties("Report Generated", "enterprise")
                body = {"event": "Report Generated", "properties": props}
                self.emit(out, "track", t, body, user_id=user_id, device=device, skew=skew)
                t = self.step(t, r.uniform(20, 400))

        # Everyday product use, in sessions; the last one starts at last_active.
        lengths = self.session_lengths(user.budget)
        low = user.signup + 15 * _MINUTE
        high = max(low, user.last_active)
        starts = sorted(self.busy_time(low, high) for _ in lengths[1:])
        starts.append(high)
        for t, n in zip(starts, lengths):
            use = device
            if user.device2 is not None and t > user.device2_at and r.random() < 0.5:
                use = user.device2
            self.app_session(out, user, use, t, n)
        return out

    def anonymous_messages(self, user: _User) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        lengths = self.session_lengths(user.budget, mean=2.5)
        starts = [user.first_seen] + sorted(
            self.busy_time(user.first_seen, user.last_active) for _ in lengths[1:]
        )
        for t, n in zip(starts, lengths):
            self.marketing_session(out, user.device, t, n)
        return out

    def session_lengths(self, budget: int, mean: float = 4.0) -> list[int]:
        r = self.rng
        lengths = []
        while budget > 0:
            n = min(budget, 1 + min(int(r.expovariate(1 / mean)), 40))
            lengths.append(n)
            budget -= n
        return lengths

    def run(self) -> Iterator[dict[str, Any]]:
        for user in self.plan():
            if user.user_id is None:
                messages = self.anonymous_messages(user)
            else:
                messages = self.identified_messages(user)
            messages.sort(key=_received_at)
            yield from messages


def _received_at(message: dict[str, Any]) -> str:
    received: str = message["receivedAt"]
    return received


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _resolve_end(end: datetime | None) -> datetime:
    if end is None:
        return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if end.tzinfo is None:
        return end.replace(tzinfo=UTC)
    return end.astimezone(UTC)


def generate_events(
    n_events: int = 200_000,
    *,
    seed: int = 7,
    end: datetime | None = None,
    days: int = 120,
) -> Iterator[dict[str, Any]]:
    """Yield ~n_events Segment-spec messages spread over `days` days before `end`.

    Messages come person by person (each person's in arrival order), not globally sorted.
    The count is exact unless ``n_events`` is too small for the lifecycle messages (signup,
    plan changes, payments) of the ``max(12, n_events / 100)`` people, who then still get
    them.

    Args:
        n_events: About how many messages to produce.
        seed: Seed of the one ``random.Random`` everything is drawn from; the same
            arguments give the same messages in the same order.
        end: The instant all messages precede (``timestamp``, ``sentAt`` and
            ``receivedAt`` are all before it); evaluate the example audiences as of it.
            Naive datetimes are taken as UTC. Default: now (UTC), rounded down to the hour.
        days: How many days before ``end`` the data covers (every ``timestamp`` is at or
            after ``end - days``). The churn-risk cohort needs at least 40.

    Yields:
        Dicts with the Segment HTTP API's camelCase fields: ``messageId``, ``type``,
        ``userId`` and/or ``anonymousId``, ``timestamp``, ``sentAt``, ``receivedAt`` (ISO
        8601 with ``+00:00``), ``context`` and the per-type fields (``event`` and
        ``properties``; ``name`` and ``properties``; ``traits``; ``groupId``;
        ``previousId``).

    Raises:
        ValueError: If ``n_events`` or ``days`` is not positive.
    """
    if n_events < 1:
        raise ValueError(f"n_events must be positive, got {n_events}")
    if days < 1:
        raise ValueError(f"days must be positive, got {days}")
    return _Generator(n_events, seed, _resolve_end(end), days).run()


def write_jsonl(
    path: str | Path,
    n_events: int = 200_000,
    *,
    seed: int = 7,
    end: datetime | None = None,
    days: int = 120,
) -> int:
    """Write the messages of :func:`generate_events` as JSON lines.

    Args:
        path: The file to write (parent directories are created; an existing file is
            replaced).
        n_events: About how many messages to produce.
        seed: Seed for :func:`generate_events`.
        end: End instant for :func:`generate_events` (default: now, rounded down to the hour).
        days: How many days before ``end`` the data covers.

    Returns:
        How many messages were written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with target.open("w", encoding="utf-8") as handle:
        for message in generate_events(n_events, seed=seed, end=end, days=days):
            handle.write(json.dumps(message, separators=(",", ":")))
            handle.write("\n")
            count += 1
    return count
