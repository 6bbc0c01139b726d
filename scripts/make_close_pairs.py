"""Training structures for the short-range wall: sampled cells with one nearest pair pushed closer.

    .venv/bin/python scripts/make_close_pairs.py --in data/ge_structures16.xyz \
        --config-types md_1200K,md_1500K,liquid --length-scale 1.022816 \
        --n 12 --range 1.6,2.1 --seed 0 --out data/ge_close_pairs16.xyz
    .venv/bin/mace_transfer_label --in data/ge_close_pairs16.xyz --out data/ge_close_pairs_pbe16.xyz \
        --engine cp2k --settings configs/dft_pbe.yaml --nprocs 1

The cells are first brought to PBE density (--length-scale, as the other PBE-density labels), then
a random atom and its nearest neighbour move to a distance drawn from --range (Å).
"""

import argparse

from ase.io import read, write

from mace_transfer.datagen.dft import scale_lengths
from mace_transfer.datagen.sampling import close_pair_variants

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--in", dest="inp", required=True, help="sampled structures (extxyz)")
parser.add_argument("--config-types", default=None, help="only these config_type values, comma-separated")
parser.add_argument("--length-scale", type=float, default=1.0, help="scale cells first (a_PBE / a_sampled)")
parser.add_argument("--n", type=int, required=True, help="number of structures to write")
parser.add_argument("--range", default="1.6,2.1", help="pair distance range, Å (low,high)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", required=True)
args = parser.parse_args()

frames = [a for a in read(args.inp, ":") if a.info.get("config_type") != "IsolatedAtom"]
if args.config_types:
    kinds = set(args.config_types.split(","))
    frames = [a for a in frames if a.info.get("config_type") in kinds]
if not frames:
    raise SystemExit(f"error: no structures of {args.config_types} in {args.inp}")
if args.length_scale != 1.0:
    frames = [scale_lengths(a, args.length_scale) for a in frames]
low, high = (float(x) for x in args.range.split(","))
variants = close_pair_variants(frames, args.n, (low, high), seed=args.seed)
write(args.out, variants, format="extxyz")
print(f"{args.out}: {len(variants)} structures, pair distances "
      f"{min(a.info['pair_distance_A'] for a in variants):.3f}-{max(a.info['pair_distance_A'] for a in variants):.3f} Å")
