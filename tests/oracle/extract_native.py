"""Extract the two native EMA files from the mmdet 3.3.0 and mmyolo 0.6.0 wheels.

Usage: ``python tests/oracle/extract_native.py WHEEL_DIR OUT_DIR``

Writes ``OUT_DIR/mmdet/models/layers/ema.py`` and
``OUT_DIR/mmyolo/models/layers/ema.py`` (nothing else from the wheels), for
:mod:`native` to load. The oracle tox env downloads the wheels with
``pip download --no-deps`` and runs this; the packages are never installed
(mmdet 3.3.0 cannot sit beside mmdet 2.28.2).
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

WHEELS = {
    'mmdet-3.3.0-py3-none-any.whl': 'mmdet/models/layers/ema.py',
    'mmyolo-0.6.0-py3-none-any.whl': 'mmyolo/models/layers/ema.py',
}


def extract(wheel_dir: Path, out_dir: Path) -> list:
    written = []
    for wheel, member in WHEELS.items():
        path = wheel_dir / wheel
        if not path.is_file():
            raise SystemExit(f'extract_native: {path} is missing; download it with '
                             f'`pip download --no-deps -d {wheel_dir} {wheel.split("-")[0]}=='
                             f'{wheel.split("-")[1]}`')
        with zipfile.ZipFile(path) as zf:
            data = zf.read(member)
        dst = out_dir / member
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix('.tmp')
        tmp.write_bytes(data)
        tmp.replace(dst)
        written.append(dst)
    return written


if __name__ == '__main__':
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for p in extract(Path(sys.argv[1]), Path(sys.argv[2])):
        print(p)
