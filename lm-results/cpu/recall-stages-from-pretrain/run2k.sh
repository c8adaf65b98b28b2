while pgrep -f "bash run.sh" > /dev/null; do sleep 10; done
M=/work/main/target/release/moba
$M train --backend ndarray --preset tiny --attention full --seq-len 2048 --recall-pairs 64 --recall-queries 32 --init-from s1k --steps 400 --batch-size 2 --lr 1e-3 --valid-every 100 --valid-batches 2 --lines --run s2k > s2k.log 2>&1
$M eval --backend ndarray --run s2k --eval-batches 2 > s2k-eval.log 2>&1
