"""The public status page as HTML: server-rendered, no JavaScript, one inline stylesheet.

Accessible by construction: landmarks (header, main, footer), one h1 and an h2 per section, states in
words (never colour alone), each 90-day bar a list whose days carry their date and uptime as text
for screen readers, and a summary sentence before it. Every value from the database is escaped.
The stylesheet is ``shared.status_page``'s: the edge allows exactly it by hash in its CSP.
"""

from __future__ import annotations

from html import escape
from typing import Any

from shared.status_page import STATUS_PAGE_CSS

STATE_WORDS = {
    "operational": "Operational",
    "degraded": "Degraded performance",
    "down": "Down",
    "unknown": "No recent data",
}


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


_OVERALL_WORDS = {
    "operational": "All systems operational",
    "degraded": "Some systems are degraded",
    "down": "Some systems are down",
    "unknown": "Some systems have not reported recently",
}


def _site_html(site: dict[str, Any]) -> str:
    state = site["state"]
    uptime = "".join(
        f"<div><dt>{escape(name)}</dt><dd>{_percent(value)}</dd></div>" for name, value in site["uptime"].items()
    )
    days = "".join(
        f'<li class="{_day_class(day["uptime"])}" title="{escape(day["day"])}: {_percent(day["uptime"])}">'
        f'<span class="sr">{escape(day["day"])}: {_percent(day["uptime"])}</span></li>'
        for day in site["bar"]
    )
    name = escape(site["name"])
    return (
        f'<section class="site" aria-labelledby="site-{escape(site["id"])}">'
        f'<h3 id="site-{escape(site["id"])}"><span>{name}</span>'
        f'<span class="state {escape(state)}">{escape(STATE_WORDS[state])}</span></h3>'
        f'<dl class="uptime" aria-label="Uptime of {name}">{uptime}</dl>'
        f'<p class="sr">Daily uptime of {name} over the last {len(site["bar"])} days, oldest first.</p>'
        f'<ol class="bar" aria-label="Daily uptime of {name}, last {len(site["bar"])} days">{days}</ol>'
        f'<div class="legend" aria-hidden="true"><span>{len(site["bar"])} days ago</span><span>today</span></div>'
        "</section>"
    )


def _incident_html(incident: dict[str, Any]) -> str:
    resolved = incident["resolved_at"] is not None
    when = f"opened {escape(incident['opened_at'][:16].replace('T', ' '))} UTC"
    if resolved:
        when += f", resolved {escape(incident['resolved_at'][:16].replace('T', ' '))} UTC"
    return (
        f'<li class="{"resolved" if resolved else "open"}"><strong>{"Resolved" if resolved else "Ongoing"}:</strong> '
        f"{escape(incident['title'])} <br><small>{when}</small></li>"
    )


def render(page: dict[str, Any]) -> str:
    company = escape(page["company_name"] or "Status")
    overall = _overall(page["sites"]) if page["sites"] else "unknown"
    sites = "".join(_site_html(site) for site in page["sites"]) or "<p>No sites are monitored yet.</p>"
    incidents = "".join(_incident_html(incident) for incident in page["incidents"])
    incidents_html = (
        f'<ul class="incidents">{incidents}</ul>' if incidents else "<p>No incidents in the last 14 days.</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{company} status</title><style>{STATUS_PAGE_CSS}</style></head><body>"
        f"<header><h1>{company} status</h1>"
        f'<p class="summary {overall}" role="status">{_OVERALL_WORDS[overall]}</p></header>'
        f"<main><h2>Sites</h2>{sites}<h2>Incidents</h2>{incidents_html}</main>"
        f"<footer><p>Updated {escape(page['generated_at'][:19].replace('T', ' '))} UTC. "
        "Uptime is measured from the sites' own checks and refreshed every minute.</p></footer>"
        "</body></html>"
    )
