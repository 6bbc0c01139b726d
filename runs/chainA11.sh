set -x; source runs/chain_lib.sh
run scratch 50 1
