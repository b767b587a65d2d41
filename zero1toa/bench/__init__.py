"""The ground-truth benchmark's instruments: a truth subject and a simulated video generator.

Why: every other quality number is measured where the avatar was trained (the photo's view).
To measure what the method does where the photo never looked, and what SymGEN and progressive
learning contribute, we need a subject whose every view and expression is known, and a video
generator whose inconsistency we control. Both live here:

- :mod:`.truth`: the truth subject, an animatable head (the built-in rig fitted to the bundled
  sample portrait) with a complete appearance: the photo where the photo saw the surface, and a
  seeded procedural solid texture everywhere else (:mod:`.texture`; an algorithm no generator of
  the pipeline uses). It renders the reference photo the pipeline is given and the ground truth
  for any camera and expression.
- :mod:`.simulated`: ``generator=simulated``, a **test instrument, not a model**: it renders the
  truth for the requested frames and corrupts it the way portrait video diffusion fails
  (geometric warps, colour drift, re-hallucinated unseen detail, expression error and jitter),
  with SDEdit-like ``strength`` semantics.
- :mod:`.heldout`: held-out metrics of an avatar against the truth (views, unseen pixels,
  expressions, sharpness).

Dependency direction: this package imports the method (head, render, generate's interface); the
method never imports it. Only the two places that dispatch on configuration reach in, lazily:
the generator factory (``generator.kind=simulated``) and the evaluate node
(``evaluate.truth_dir`` set).
"""
