# Split decode with cached block means on this 2-core machine's lavapipe (commit 570f1ee):
target/release/moba bench --decode --heads 16 --kv-heads 2 --head-dim 128 --batch 1 \
    --seq-lens 8192,32768 --block-size 512 --top-k 3 --runs 3 \
    --out bench-results/lavapipe-decode/split-decode.jsonl
