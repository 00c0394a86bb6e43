"""Write the HTML template `dvc plots show/diff --html-template` renders into, with Vega, Vega-Lite
and Vega-Embed inlined, so the page draws its charts with no network (DVC's own page loads them
from a CDN at view time).

    python infra/offline-plots-template.py [OUT]          # default .dvc/tmp/plots-offline.html
    dvc plots diff HEAD my-exp --html-template .dvc/tmp/plots-offline.html -o plots-diff

The libraries come from the vl-convert-python wheel (the dev extra, requirements/dev.lock), which bundles them.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <script type="text/javascript">
%s
    </script>
    <style>
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else ".dvc/tmp/plots-offline.html")
    try:
        import vl_convert
    except ImportError:
        print("needs vl-convert-python, a dev dependency: make setup (requirements/dev.lock)", file=sys.stderr)
        return 2
    bundle = vl_convert.javascript_bundle()
    # No "{scripts}" placeholder: DVC would put its CDN <script src=...> tags there.
    page = PAGE % bundle.replace("</script", "<\\/script")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as fh:
        fh.write(page)
    os.replace(fh.name, out)
    print(f"wrote {out} ({len(page) // 1024} KiB, Vega/Vega-Lite/Vega-Embed inlined)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
