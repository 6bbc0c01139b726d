set -x; source runs/chain_lib.sh
run transfer_rescale 50 1
run transfer 50 0
run scratch 50 1
