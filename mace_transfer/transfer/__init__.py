"""Floor 2, the MACE-facing core: ``remap`` (element-indexed weights A->B, A->A+B), ``freeze`` (the
seam into MACE's optimizer groups) and ``train`` (the one door to MACE's ``run(args)``)."""
