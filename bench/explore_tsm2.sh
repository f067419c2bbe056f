# Hyperparameter exploration for TSM2 on ETTh1 (input 512, horizon 96) on one GPU, eight runs at once.
# usage (device machine): bash bench/explore_tsm2.sh OUT
out=$1
i=0
while read -r overrides; do
  i=$((i + 1))
  timeout 560 python3 bench/forecasting.py --out "$out/g$i" --runs /tmp/runs/g$i --experiments tsm2_etth1 \
    --horizons 96 --jobs 1 -- trainer=gpu use_tuned=false $overrides > "/tmp/g$i.log" 2>&1 &
done <<'GRID'
task.optimizer.lr=1e-3
task.optimizer.lr=1e-4
task.optimizer.lr=3e-4
task.optimizer.lr=1e-4 model.d_model=64
task.optimizer.lr=3e-4 model.d_model=64 model.dropout=0.3
task.optimizer.lr=3e-4 model.d_model=32 model.stride=8
task.optimizer.lr=1e-4 data.batch_size=128 model.d_model=64
task.optimizer.lr=1e-4 model.d_model=32 model.depth=3
GRID
wait
for f in "$out"/g*/forecasting.json; do python3 -c "import json,sys; [print(sys.argv[1], r['command'][-110:], r.get('test/mse'), r.get('epochs'), r['wall_time_s'], r.get('error','')[-300:]) for r in json.load(open(sys.argv[1]))]" "$f"; done
