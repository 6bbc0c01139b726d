set -x; source runs/chain_lib.sh
run transfer 50 1
run transfer 50 2
run scratch 50 2
