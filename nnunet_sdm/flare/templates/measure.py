"""nnunet-sdm flare run: run the command given after the output path, then write its wall time and the peak
RSS of its process tree (RUSAGE_CHILDREN of this fresh process: the largest descendant waited for).

Usage: python measure.py OUT.json COMMAND [ARGS...]
"""

import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
rss_bytes = rss if sys.platform == "darwin" else rss * 1024
with open(sys.argv[1], "w") as f:
    json.dump({"returncode": code, "seconds": seconds, "peak_rss_bytes": rss_bytes}, f)
sys.exit(code)
