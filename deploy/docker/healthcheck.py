"""Container HEALTHCHECK: exit 0 iff GET /health/ready on this container answers 200.

Standard library only (the image has no curl). Bypasses any *_proxy variables.
"""

import os
import sys
import urllib.request

URL = f"http://127.0.0.1:{os.environ.get('PROPENSITY_PORT', '1313')}/health/ready"

try:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(URL, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "4"))) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception as exc:  # any failure (refused, timeout, 503) means unhealthy
    print(f"unhealthy: GET {URL}: {exc}", file=sys.stderr)
    sys.exit(1)
