"""Fake third-party servers on 127.0.0.1 that speak the real wire formats, with their failure modes:
Portainer (devstack/fakes/portainer.py, which also serves the sites' HTTPS) and Cloudflare's DNS API
(devstack/fakes/cloudflare.py). `agistack dev` runs them unless real endpoints are configured; the
tests and the chaos benchmark run them with failures switched on."""
