"""The public status page as HTML: server-rendered, no JavaScript, one inline stylesheet.

Accessible by construction: landmarks (header, main, footer), one h1, a named region per section and
per site, states in words and a symbol (never colour alone), each 90-day bar a named list whose days
carry their date and uptime as text (and as a tooltip), a legend in words, and times in ``<time>``.
Every value from the database is escaped. The stylesheet is ``shared.status_page``'s: the edge allows
exactly it by hash in its CSP, so nothing here may use a ``style`` attribute.

Rendering is plain string joins (about 0.2 ms for three sites): no template engine to import on a
cold start.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from shared.status_page import STATUS_PAGE_CSS

STATE_WORDS = {
    "operational": "Operational",
    "degraded": "Degraded performance",
    "down": "Down",
    "unknown": "No recent data",
}
WINDOW_WORDS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "90d": "Last 90 days"}
_OVERALL = {
    "operational": ("All systems operational", "✓"),
    "degraded": ("Some systems are degraded", "!"),
    "down": ("Some systems are down", "✕"),
    "unknown": ("Some systems have not reported recently", "?"),
}
# Day colours: the thresholds the legend states in words.
_LEGEND = (
    ("ok", "99.9% or more"),
    ("warn", "95% to 99.9%"),
    ("bad", "below 95%"),
    ("none", "no data"),
)


def _percent(value: float | None) -> str:
    return "no data" if value is None else f"{value:.2f}%"


def _day_class(uptime: float | None) -> str:
    if uptime is None:
        return "none"
    return "ok" if uptime >= 99.9 else "warn" if uptime >= 95 else "bad"


def _overall(sites: list[dict[str, Any]]) -> str:
    states = {site["state"] for site in sites}
    for state in ("down", "degraded", "unknown"):
        if state in states:
            return state
    return "operational"


def _time(iso: str) -> str:
    """A UTC instant as ``<time>``: machine-readable attribute, short human text."""
    return f'<time datetime="{escape(iso)}">{datetime.fromisoformat(iso).astimezone(UTC):%b %-d, %H:%M} UTC</time>'


def _duration(opened: str, resolved: str) -> str:
    minutes = int((datetime.fromisoformat(resolved) - datetime.fromisoformat(opened)).total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours and minutes else f"{hours} h" if hours else f"{minutes} min"


def _site_html(site: dict[str, Any]) -> str:
    state = site["state"]
    name = escape(site["name"])
    heading = f"site-{escape(str(site['id']))}"
    uptime = "".join(
        f"<div><dt>{WINDOW_WORDS[window]}</dt><dd>{_percent(value)}</dd></div>"
        for window, value in site["uptime"].items()
    )
    days = "".join(
        f'<li class="{_day_class(day["uptime"])}" title="{text}"><span class="sr">{text}</span></li>'
        for day in site["bar"]
        for text in (f"{escape(day['day'])}: {_percent(day['uptime'])}",)
    )
    count = len(site["bar"])
    domain = f'<p class="domain">{escape(site["domain"])}</p>' if site["domain"] != site["name"] else ""
    return (
        f'<section class="site" aria-labelledby="{heading}"><div class="site-head">'
        f'<h3 id="{heading}">{name}</h3><p class="state {escape(state)}">{STATE_WORDS[state]}</p></div>{domain}'
        f'<dl class="uptime">{uptime}</dl>'
        f'<ol class="bar" aria-label="Daily uptime of {name}, last {count} days, oldest first">{days}</ol>'
        f'<div class="axis" aria-hidden="true"><span>{count} days ago</span><span>Today</span></div>'
        "</section>"
    )


def _incident_html(incident: dict[str, Any]) -> str:
    resolved = incident["resolved_at"]
    if resolved is None:
        badge, detail = "Ongoing", f"Since {_time(incident['opened_at'])}"
    else:
        badge = "Resolved"
        detail = f"{_time(incident['opened_at'])} to {_time(resolved)}, {_duration(incident['opened_at'], resolved)}"
    return (
        f'<li class="{"resolved" if resolved else "open"}"><span class="badge">{badge}</span>'
        f"<h3>{escape(incident['title'])}</h3><p>{escape(incident['site_name'])} · {detail}</p></li>"
    )


def render(page: dict[str, Any]) -> str:
    company = escape(page["company_name"] or "Status")
    overall = _overall(page["sites"]) if page["sites"] else "unknown"
    words, symbol = _OVERALL[overall]
    sites = "".join(_site_html(site) for site in page["sites"]) or '<p class="empty">No sites are monitored yet.</p>'
    legend = "".join(f'<li><span class="swatch {kind}"></span>{text}</li>' for kind, text in _LEGEND)
    incidents = "".join(_incident_html(incident) for incident in page["incidents"])
    incidents_html = (
        f'<ol class="timeline">{incidents}</ol>'
        if incidents
        else '<p class="empty">No incidents in the last 14 days.</p>'
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{company} status</title><style>{STATUS_PAGE_CSS}</style></head><body>"
        f"<header><h1>{company} status</h1>"
        f'<p class="summary {overall}" role="status"><span class="icon" aria-hidden="true">{symbol}</span>'
        f"{words}</p></header><main>"
        f'<section aria-labelledby="sites"><h2 id="sites">Sites</h2>'
        f'<ul class="legend" aria-label="Colours of the daily bars">{legend}</ul>{sites}</section>'
        f'<section aria-labelledby="incidents"><h2 id="incidents">Incidents</h2>{incidents_html}</section></main>'
        f"<footer><p>Updated {_time(page['generated_at'])}. "
        "Uptime is the share of minutely checks that succeeded, refreshed every minute.</p></footer>"
        "</body></html>"
    )
