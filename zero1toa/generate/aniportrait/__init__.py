"""The AniPortrait route: a portrait animation video model (reference UNet + pose guider + denoising
UNet with motion modules + CLIP image encoder) loaded from AniPortrait's published checkpoint files.

Modules: :mod:`.guider` (pose guider), :mod:`.motion` (motion modules), :mod:`.unet3d` (the two
UNets), :mod:`.reference_attn` (reference attention), :mod:`.checkpoint` (folder layout, state-dict
manifest and loading), :mod:`.sampling` (the denoising loop over overlapping windows),
:mod:`.generator` (the :class:`~zero1toa.generate.base.VideoGenerator`), :mod:`.tiny` (tiny random
models in the same layout, for tests).
"""
