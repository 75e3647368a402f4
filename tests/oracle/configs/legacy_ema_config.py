# An mmengine config that keeps mmdet 2.x YOLOX EMA numbers (ExpMomentumEMAHook(momentum=0.0001,
# priority=49)) with the real mmengine EMAHook; the plugin is imported by custom_imports.
custom_imports = dict(imports=['compat_ema.integrations.mmengine_plugin'],
                      allow_failed_imports=False)
default_scope = 'mmengine'
train_cfg = dict(by_epoch=True, max_epochs=2)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))
custom_hooks = [
    dict(type='EMAHook', ema_type='LegacyExpMomentumEMA', momentum=0.0001, priority=49),
]
randomness = dict(seed=0)
log_level = 'ERROR'
