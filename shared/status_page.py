"""The public status page's stylesheet, inline in the page, and its CSP hash.

Defined once here because two sides need it: the origin renders it into the page, and the edge's
Content-Security-Policy for HTML allows exactly this stylesheet (``'sha256-...'``), not inline styles
in general (so the page uses classes only, never ``style`` attributes).

Light and dark follow ``prefers-color-scheme``. Text on the coloured banner and badges uses the deep
shades (white on them stays above 4.5:1); the bright shades are only for the bars and dots, whose
meaning is always also written out.
"""

from __future__ import annotations

import base64
import hashlib

STATUS_PAGE_CSS = """
:root{color-scheme:light dark;--bg:#f5f6f8;--card:#fff;--ink:#111827;--muted:#5b6472;--line:#e3e6ea;
--chip:#f3f4f6;--ok:#22a355;--warn:#e8930c;--bad:#dc3535;--none:#d5d9df;--ok-deep:#15803d;--warn-deep:#b45309;
--bad-deep:#b91c1c;--ok-text:#15803d;--warn-text:#a14a07;--bad-text:#b91c1c}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b24;--ink:#e6e9ee;--muted:#9ba5b4;
--line:#283242;--chip:#1d2430;--ok:#2fbf68;--warn:#f0a020;--bad:#f05252;--none:#343e4d;--ok-text:#4ade80;
--warn-text:#fbbf24;--bad-text:#f87171}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header,main,footer{max-width:880px;margin:0 auto;padding:0 1.25rem}
header{padding-top:2.75rem;padding-bottom:.5rem}
h1{font-size:clamp(1.5rem,4vw,2.1rem);line-height:1.2;letter-spacing:-.02em;margin:0 0 1.25rem}
h2{font-size:1.1rem;letter-spacing:-.01em;margin:2.25rem 0 .85rem}
.summary{display:flex;align-items:center;gap:.8rem;margin:0;padding:1.05rem 1.35rem;border-radius:14px;
font-size:1.1rem;font-weight:600;color:#fff;background:var(--ok-deep)}
.summary.degraded{background:var(--warn-deep)}.summary.down{background:var(--bad-deep)}
.summary.unknown{background:#4b5563}
.icon{display:inline-grid;place-items:center;flex:none;width:1.7rem;height:1.7rem;border-radius:50%;
background:rgba(255,255,255,.22);font-size:1rem;line-height:1}
.legend{display:flex;flex-wrap:wrap;gap:.4rem 1.1rem;list-style:none;margin:0 0 1rem;padding:0;
font-size:.85rem;color:var(--muted)}
.legend li{display:flex;align-items:center;gap:.4rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:3px;background:var(--none)}
.site{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:1.15rem 1.35rem 1rem;
margin:0 0 1rem;box-shadow:0 1px 2px rgba(16,24,40,.05)}
.site-head{display:flex;align-items:baseline;justify-content:space-between;gap:.25rem 1rem;flex-wrap:wrap}
.site h3{margin:0;font-size:1.1rem}.domain{margin:0;color:var(--muted);font-size:.85rem}
.state{display:inline-flex;align-items:center;gap:.45rem;margin:0;font-weight:600;font-size:.92rem}
.state::before{content:"";width:.62rem;height:.62rem;border-radius:50%;background:currentColor}
.state.operational{color:var(--ok-text)}.state.degraded{color:var(--warn-text)}
.state.down{color:var(--bad-text)}.state.unknown{color:var(--muted)}
dl.uptime{display:grid;grid-template-columns:repeat(4,1fr);gap:.5rem;margin:.9rem 0 1rem}
dl.uptime div{background:var(--chip);border-radius:10px;padding:.45rem .7rem}
dt{font-size:.78rem;color:var(--muted)}dd{margin:0;font-weight:650;font-size:1.05rem;font-variant-numeric:tabular-nums}
ol.bar{display:flex;gap:2px;height:38px;list-style:none;margin:0;padding:0}
ol.bar li{flex:1;min-width:0;border-radius:2px;background:var(--ok)}
ol.bar li:hover{opacity:.65}
ol.bar li.warn,.swatch.warn{background:var(--warn)}ol.bar li.bad,.swatch.bad{background:var(--bad)}
ol.bar li.none{background:var(--none)}.swatch.ok{background:var(--ok)}
.axis{display:flex;justify-content:space-between;margin-top:.35rem;font-size:.78rem;color:var(--muted)}
ol.timeline{list-style:none;margin:0;padding:0 0 0 1.3rem;border-left:2px solid var(--line)}
ol.timeline li{position:relative;background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:.8rem 1.1rem;margin:0 0 .85rem}
ol.timeline li::before{content:"";position:absolute;left:calc(-1.3rem - 8px);top:1.05rem;width:12px;
height:12px;border-radius:50%;background:var(--bad);border:2px solid var(--bg)}
ol.timeline li.resolved::before{background:var(--ok)}
ol.timeline h3{margin:.2rem 0;font-size:1rem}ol.timeline p{margin:0;color:var(--muted);font-size:.88rem}
.badge{display:inline-block;padding:.05rem .55rem;border-radius:999px;font-size:.72rem;font-weight:700;
letter-spacing:.05em;text-transform:uppercase;color:#fff;background:var(--bad-deep)}
.resolved .badge{background:var(--ok-deep)}
.empty{color:var(--muted)}
footer{padding-top:1.5rem;padding-bottom:3rem;color:var(--muted);font-size:.85rem}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:560px){dl.uptime{grid-template-columns:repeat(2,1fr)}ol.bar{gap:1px;height:34px}
.site{padding:1rem}header{padding-top:1.75rem}}
"""

STATUS_PAGE_CSS_HASH = (
    "'sha256-" + base64.b64encode(hashlib.sha256(STATUS_PAGE_CSS.encode("utf-8")).digest()).decode() + "'"
)
