"""The public status page's stylesheet, inline in the page, and its CSP hash.

Defined once here because two sides need it: the origin renders it into the page, and the edge's
Content-Security-Policy for HTML allows exactly this stylesheet (``'sha256-...'``), not inline styles
in general.
"""

from __future__ import annotations

import base64
import hashlib

STATUS_PAGE_CSS = """
:root{color-scheme:light;--ok:#1f8a4c;--warn:#b7791f;--bad:#c53030;--none:#cbd5e0;--ink:#1a202c;--muted:#4a5568}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:#f7fafc}header,main,footer{max-width:860px;margin:0 auto;padding:1.5rem}
header{padding-top:2.5rem}h1{margin:0 0 .25rem;font-size:1.9rem}.summary{font-size:1.15rem;padding:1rem 1.25rem;
border-radius:.5rem;color:#fff;background:var(--ok)}.summary.degraded{background:var(--warn)}
.summary.down{background:var(--bad)}.summary.unknown{background:var(--muted)}
.site{background:#fff;border:1px solid #e2e8f0;border-radius:.5rem;padding:1rem 1.25rem;margin:1rem 0}
.site h3{margin:0;font-size:1.1rem;display:flex;justify-content:space-between;gap:1rem;flex-wrap:wrap}
.state{font-weight:600}.state.operational{color:var(--ok)}.state.degraded{color:var(--warn)}
.state.down{color:var(--bad)}.state.unknown{color:var(--muted)}
dl.uptime{display:grid;grid-template-columns:repeat(4,1fr);gap:.5rem;margin:.75rem 0}
dl.uptime div{background:#f7fafc;border-radius:.375rem;padding:.4rem .6rem}dt{font-size:.8rem;color:var(--muted)}
dd{margin:0;font-weight:600}ol.bar{list-style:none;display:flex;gap:2px;padding:0;margin:.5rem 0 0;height:34px}
ol.bar li{flex:1;border-radius:2px;background:var(--none)}ol.bar li.ok{background:var(--ok)}
ol.bar li.warn{background:var(--warn)}ol.bar li.bad{background:var(--bad)}
.legend{display:flex;justify-content:space-between;font-size:.8rem;color:var(--muted)}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
ul.incidents{padding:0;list-style:none}ul.incidents li{background:#fff;border-left:4px solid var(--warn);
padding:.6rem 1rem;margin:.5rem 0;border-radius:.25rem}ul.incidents li.resolved{border-color:var(--ok)}
footer{color:var(--muted);font-size:.85rem}
"""

STATUS_PAGE_CSS_HASH = (
    "'sha256-" + base64.b64encode(hashlib.sha256(STATUS_PAGE_CSS.encode("utf-8")).digest()).decode() + "'"
)
