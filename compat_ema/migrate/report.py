"""The text report ``compat-ema migrate`` prints: what changed, and how far the numbers move."""
from __future__ import annotations

from typing import List

from .compare import compare, side_by_side
from .core import Migration
from .gan import GanSpec, classify_gan, divergence, gan_schedule
from .rewrite import render

__all__ = ['migration_report']


def migration_report(mig: Migration, sim_iters: int = 3000, table_rows: int = 24) -> str:
    """Notes, the mapping of each EMA entry, and (for both modes) the legacy comparison.

    ``--native``: the momentum schedules side by side, the first iteration
    where they differ, the largest relative difference, the final-EMA mixture
    distance and the toy EMA gap. ``--exact``: the same check, which must
    show identical schedules and a bitwise-equal toy EMA.
    """
    lines: List[str] = [f'compat-ema migrate --{mig.mode}: {mig.source}',
                        f'run length: {mig.iters} iterations ({mig.iters_from})']
    for note in mig.notes:
        lines.append(f'note: {note}')
    for mapped in mig.mapped:
        spec = mapped.spec
        new = mapped.new_entry()
        lines.append('')
        lines.append(f'legacy : {render(spec.raw)}')
        lines.append(f'mmengine: {render(new)}')
        for note in mapped.notes:
            lines.append(f'  - {note}')
        if isinstance(spec, GanSpec):
            lines.extend(_gan_lines(mig, spec, new, sim_iters, table_rows))
            continue
        legacy = dict(spec.raw)
        legacy['type'] = spec.kind
        cmp = compare(legacy, new, mig.iters, 'mmcv', sim_iters=sim_iters)
        name = mig.mode
        for line in cmp.summary(name):
            lines.append(f'  * {line}')
        if mig.mode == 'native':
            lines.append(side_by_side(cmp, ('legacy', name), max_rows=table_rows))
    return '\n'.join(lines)


def _gan_lines(mig: Migration, spec: GanSpec, new: dict, sim_iters: int, rows: int) -> List[str]:
    """mmedit -> mmagic: the schedules side by side and the simulated numeric divergence."""
    from .schedule import format_table
    n = min(mig.iters, sim_iters)
    new_spec = classify_gan(new, 'mmengine')
    old_steps, new_steps = gan_schedule(spec, n), gan_schedule(new_spec, n)
    same = all(a.action == b.action and abs(a.momentum - b.momentum) <= 1e-12
               for a, b in zip(old_steps, new_steps))
    out = ['  * weight of the new weights per iteration: '
           + ('identical (to 1e-12) at all ' if same else 'DIFFERENT over ') + f'{n} iterations']
    out += [f'  * {line}' for line in divergence(dict(spec.raw, type=spec.kind), new, n)]
    if mig.mode == 'native':
        out.append(format_table({'mmedit': old_steps, 'mmagic': new_steps}, max_rows=rows))
    return out
