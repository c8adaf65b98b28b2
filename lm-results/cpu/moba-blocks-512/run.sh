set -x
M=moba
run() { name=$1; shift
  $M train --backend ndarray --preset tiny --seq-len 512 --recall-pairs 16 --recall-queries 8 --init-from runs/pretrain --steps 800 --batch-size 8 --lr 1e-3 --valid-every 200 --lines --run $name "$@" > $name.log 2>&1
  $M eval --backend ndarray --run $name > $name-eval.log 2>&1
}
run b64k3 --attention moba --block-size 64 --top-k 3 &
run b128k2 --attention moba --block-size 128 --top-k 2 &
wait
