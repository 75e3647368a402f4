"""Checkpoint migration across the three OpenMMLab EMA generations, loaded safely.

* :func:`load`: ``torch.load`` without running pickled code (restricted
  unpickler; mmengine's ``HistoryBuffer`` and numpy objects become inert
  placeholders; anything else refused). ``trust=True`` for a full unpickle.
* :func:`inspect`: which generation wrote a file, with the evidence; EMA keys
  and side, ``steps``, meta epoch/iter, serialization format, suspicious parts.
* :func:`convert`: mmcv 1.x <-> mmdet 2.x <-> mmengine 0.x, written atomically.
* :func:`export_ema`: a plain state dict of the EMA weights, for inference.

No OpenMMLab package is imported.
"""
from .convert import Result, convert, read
from .errors import CheckpointError, UnsafeCheckpointError
from .export import export_ema
from .formats import EMACheckpoint, parse
from .keys import ema_name, match_ema_keys
from .report import Report, inspect
from .safe_load import Opaque, detect_serialization, load
from .writers import atomic_save

__all__ = ['load', 'inspect', 'convert', 'export_ema', 'read', 'parse', 'Report', 'Result',
           'EMACheckpoint', 'CheckpointError', 'UnsafeCheckpointError', 'Opaque',
           'detect_serialization', 'atomic_save', 'ema_name', 'match_ema_keys']
