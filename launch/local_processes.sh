#!/usr/bin/env bash
# N processes of one training run on this machine, joined by jax.distributed:
#
#   launch/local_processes.sh N --config=configs/digits_lt.py --workdir=DIR [flags ...]
#
# For trying multi-process runs on CPU devices - each process gets the devices
#   XLA_FLAGS=--xla_force_host_platform_device_count=K JAX_PLATFORMS=cpu
# give it - and for a multi-GPU host without a scheduler: GPUS_PER_PROCESS=k makes
# process i drive GPUs i*k .. i*k+k-1 (else every process sees every GPU: set it).
#
# Each process runs `$PYTHON -m tlc_jax.main "$@"` (PYTHON defaults to python) with
#   JAX_COORDINATOR_ADDRESS=localhost:PORT   process 0 serves it; PORT is a free port,
#                                            or COORDINATOR_PORT when set
#   JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i    which process it is
# Process 0 logs and writes the outputs; the others log warnings only.
#
# The processes run in sessions of their own; Ctrl-C (SIGINT to this script) is passed on
# once to every process: they stop at a step they agree on and the same command resumes
# (a second Ctrl-C stops them at once); SIGTERM and SIGHUP are passed on as SIGTERM.
# A shell cannot trap a signal that was ignored when it started: launched with `&` from
# a script (non-interactive shells start background jobs with SIGINT ignored), or from a
# process that ignores SIGINT, this script never sees a Ctrl-C / SIGINT - stop it with
# SIGTERM then.
# When a process fails or dies the others stop on their own, within --heartbeat_timeout
# seconds (default 100); any still running STOP_GRACE seconds (default 150) after the
# first failure is killed.
# Exit status: the first failing process's, else 0.
set -uo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N --config=... --workdir=... [flags ...]   (N processes, N >= 1)" >&2
  exit 2
fi
n=$1
shift
python=${PYTHON:-python}
port=${COORDINATOR_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}
grace=${STOP_GRACE:-150}
# Own sessions, so a Ctrl-C in the terminal reaches them once, through the trap below.
detach=()
command -v setsid >/dev/null && detach=(setsid)

pids=()
for ((i = 0; i < n; i++)); do
  local_ids=()
  if [[ -n "${GPUS_PER_PROCESS:-}" ]]; then
    local_ids=(JAX_LOCAL_DEVICE_IDS="$(seq -s, $((i * GPUS_PER_PROCESS)) $((i * GPUS_PER_PROCESS + GPUS_PER_PROCESS - 1)))")
  fi
  env JAX_COORDINATOR_ADDRESS="localhost:$port" JAX_NUM_PROCESSES="$n" \
      JAX_PROCESS_ID="$i" "${local_ids[@]}" \
      "${detach[@]}" "$python" -m tlc_jax.main "$@" &
  pids+=($!)
  echo "local_processes.sh: process $i of $n: pid $!" >&2
done

forward() { for pid in "${pids[@]}"; do kill -s "$1" "$pid" 2>/dev/null; done; }
trap 'forward INT' INT
trap 'forward TERM' TERM HUP  # Also when the terminal goes away.

status=0
first_failure=
running=$n
declare -A ended=()
while ((running > 0)); do
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [[ -n "${ended[$i]:-}" ]] && continue
    kill -0 "$pid" 2>/dev/null && continue
    wait "$pid"
    rc=$?
    ended[$i]=1
    running=$((running - 1))
    if ((rc != 0)); then
      echo "local_processes.sh: process $i (pid $pid) ended with status $rc" >&2
      if ((status == 0)); then status=$rc; first_failure=$SECONDS; fi
    fi
  done
  if [[ -n "$first_failure" ]] && ((running > 0 && SECONDS - first_failure > grace)); then
    echo "local_processes.sh: $running process(es) still running $grace s after a" \
         "failure; killing them" >&2
    forward KILL
    first_failure=$SECONDS
  fi
  ((running > 0)) && sleep 0.2
done
exit "$status"
