"""Extract the native EMA files from the mmdet 3.3.0, mmyolo 0.6.0, mmedit 0.16.1 and mmagic 1.2.0
wheels.

Usage: ``python tests/oracle/extract_native.py WHEEL_DIR OUT_DIR``

Writes ``OUT_DIR/mmdet/models/layers/ema.py``, ``OUT_DIR/mmyolo/models/layers/ema.py``,
``OUT_DIR/mmedit/core/hooks/ema.py``, ``OUT_DIR/mmagic/engine/hooks/ema.py``,
``OUT_DIR/mmagic/models/base_models/average_model.py`` (``BaseGAN``'s averaged models), mmedit's four shipped configs with an EMA hook, and ``OUT_DIR/mmgen/core/hooks/ema_hook.py``
from the mmgen 0.7.3 sdist (nothing else from the archives), for
:mod:`native` and :mod:`gan_native` to load. The oracle tox env downloads the wheels with
``pip download --no-deps`` and runs this; the packages are never installed
(mmdet 3.3.0 cannot sit beside mmdet 2.28.2).
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

_MMEDIT_CONFIGS = 'mmedit/.mim/configs/restorers/'
#: mmedit 0.16.1's shipped configs that use ExponentialMovingAverageHook
MMEDIT_EMA_CONFIGS = (
    'real_basicvsr/realbasicvsr_c64b20_1x30x8_lr5e-5_150k_reds.py',
    'real_basicvsr/realbasicvsr_wogan_c64b20_2x30x8_lr1e-4_300k_reds.py',
    'real_esrgan/realesrgan_c64b23g32_12x4_lr1e-4_400k_df2k_ost.py',
    'real_esrgan/realesrnet_c64b23g32_12x4_lr2e-4_1000k_df2k_ost.py',
)
WHEELS = {
    'mmdet-3.3.0-py3-none-any.whl': ['mmdet/models/layers/ema.py'],
    'mmyolo-0.6.0-py3-none-any.whl': ['mmyolo/models/layers/ema.py'],
    'mmedit-0.16.1-py2.py3-none-any.whl': ['mmedit/core/hooks/ema.py'] + [
        _MMEDIT_CONFIGS + c for c in MMEDIT_EMA_CONFIGS],
    'mmagic-1.2.0-py2.py3-none-any.whl': ['mmagic/engine/hooks/ema.py',
                                          'mmagic/models/base_models/average_model.py'],
}


#: sdists (no wheel on PyPI): archive -> members, written without the archive's top directory
SDISTS = {'mmgen-0.7.3.tar.gz': ['mmgen/core/hooks/ema_hook.py']}


def _write(dst: Path, data: bytes) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix('.tmp')
    tmp.write_bytes(data)
    tmp.replace(dst)


def extract_sdists(wheel_dir: Path, out_dir: Path) -> list:
    import tarfile
    written = []
    for archive, members in SDISTS.items():
        path = wheel_dir / archive
        if not path.is_file():
            raise SystemExit(f'extract_native: {path} is missing; download it with `pip download '
                             f'--no-deps --no-build-isolation -d {wheel_dir} mmgen==0.7.3` '
                             '(with torch installed: its setup.py imports torch)')
        top = archive[:-len('.tar.gz')]
        with tarfile.open(path) as tf:
            for member in members:
                data = tf.extractfile(f'{top}/{member}').read()
                _write(out_dir / member, data)
                written.append(out_dir / member)
    return written


def extract(wheel_dir: Path, out_dir: Path) -> list:
    written = []
    for wheel, members in WHEELS.items():
        path = wheel_dir / wheel
        if not path.is_file():
            raise SystemExit(f'extract_native: {path} is missing; download it with '
                             f'`pip download --no-deps -d {wheel_dir} {wheel.split("-")[0]}=='
                             f'{wheel.split("-")[1]}`')
        with zipfile.ZipFile(path) as zf:
            for member in members:
                _write(out_dir / member, zf.read(member))
                written.append(out_dir / member)
    return written


if __name__ == '__main__':
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for p in (extract(Path(sys.argv[1]), Path(sys.argv[2]))
              + extract_sdists(Path(sys.argv[1]), Path(sys.argv[2]))):
        print(p)
