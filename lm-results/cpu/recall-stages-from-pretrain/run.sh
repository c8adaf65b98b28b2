set -x
M=/work/main/target/release/moba
$M train --backend ndarray --preset tiny --attention full --seq-len 512 --recall-pairs 16 --recall-queries 8 --init-from /tmp/lmruns/pretrain --steps 800 --batch-size 8 --lr 1e-3 --valid-every 200 --lines --run s512 > s512.log 2>&1
$M eval --backend ndarray --run s512 > s512-eval.log 2>&1
$M train --backend ndarray --preset tiny --attention full --seq-len 1024 --recall-pairs 32 --recall-queries 16 --init-from s512 --steps 800 --batch-size 4 --lr 1e-3 --valid-every 200 --lines --run s1k > s1k.log 2>&1
$M eval --backend ndarray --run s1k > s1k-eval.log 2>&1
