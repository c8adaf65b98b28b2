# The hybrid (MoBA block 128 top-3, then one full layer) against full attention at 1,024
# bytes on the CPU, from the 256-byte pretraining (runs/pretrain): does the hybrid miss the
# records nearest to the queries, as at 8K on the GPU? 32 records, 16 queries (the query
# region is one 128-byte block), 500 steps of 8 sequences, learning rate 1e-3.
set -x
M=moba
run() { name=$1; shift
  $M train --backend ndarray --preset tiny --seq-len 1024 --recall-pairs 32 --recall-queries 16 --init-from runs/pretrain --steps 500 --batch-size 8 --lr 1e-3 --valid-every 250 --lines --run $name "$@" > $name.log 2>&1
  $M eval --backend ndarray --run $name --buckets 4 --recall-sequences 32 > $name-eval.log 2>&1
}
run hybrid --attention moba --full-layers 1 --block-size 128 --top-k 3 &
run full --attention full &
wait
