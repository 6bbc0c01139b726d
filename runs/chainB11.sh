set -x; source runs/chain_lib.sh
run transfer 50 2
