"""Floor 1, labelled configurations: ``classical`` (SW / Tersoff), ``sampling`` (MD ladder, liquid,
strain, vacancy, close pairs) and ``dft`` (PBE labels through CP2K)."""
