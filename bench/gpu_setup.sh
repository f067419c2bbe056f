# Sourced at the start of a device run: hydra from the carried wheels, the package importable as
# `mambamixer` from this checkout, benchmark data from the carried .benchdata/.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || return 1
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/mambamixer
export PYTHONPATH=/tmp/pkg:/tmp/site MAMBAMIXER_DATA="$PWD/.benchdata" PYTHONUNBUFFERED=1
