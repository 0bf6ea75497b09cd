"""Decode the QR codes Bastion draws, with an independent reader (zbarimg, from Debian's
zbar-tools), so tests prove the picture really carries the otpauth URI."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import IN_CI

ZBARIMG = shutil.which("zbarimg") or "/usr/bin/zbarimg"
OATHTOOL = shutil.which("oathtool") or "/usr/bin/oathtool"


def require_tool(path: str, package: str) -> None:
    if not Path(path).exists():
        if IN_CI:
            pytest.fail(f"{path} missing under CI=true: apt-get install -y {package}")
        pytest.skip(f"{path} not installed (apt-get install -y {package})")


def svg_modules(svg: str) -> list[list[bool]]:
    """The module matrix of a segno SVG: one path of horizontal runs, ``M x y`` then
    ``h n`` (dark run of n modules) and relative moves ``m dx dy``; y is the row + 0.5."""
    path = re.search(r'class="qrline"[^>]* d="([^"]+)"', svg)
    if path is None:
        path = re.search(r' d="(M[^"]+)"[^>]*class="qrline"', svg)
    assert path is not None, "no QR path in the SVG"
    width = int(re.search(r'width="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    scale = int(re.search(r"scale\((\d+)\)", svg).group(1))  # type: ignore[union-attr]
    size = width // scale
    grid = [[False] * size for _ in range(size)]
    x = y = 0.0
    for op, a, b in re.findall(r"([MmHh])(-?[\d.]+)(?:\s(-?[\d.]+))?", path.group(1)):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            run = int(float(a))
            for i in range(run):
                grid[int(y)][int(x) + i] = True
            x += run
    return grid


def decode_modules(grid: list[list[bool]], tmp: Path, scale: int = 6) -> str:
    """Write the matrix as a plain PBM image and let zbarimg read it."""
    require_tool(ZBARIMG, "zbar-tools")
    size = len(grid)
    rows = []
    for row in grid:
        line = " ".join("1" if dark else "0" for dark in row for _ in range(scale))
        rows.extend([line] * scale)
    image = tmp / "qr.pbm"
    image.write_text(f"P1\n{size * scale} {size * scale}\n" + "\n".join(rows) + "\n")
    out = subprocess.run(
        [ZBARIMG, "--raw", "-q", str(image)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def decode_svg(svg: str, tmp: Path) -> str:
    return decode_modules(svg_modules(svg), tmp)
