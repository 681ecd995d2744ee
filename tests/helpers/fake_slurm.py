"""SLURM's commands on one machine, for running the submitit launcher's own jobs in tests: `sbatch` starts the
batch script in the background (each array index in turn) with the variables SLURM sets for a job of --nodes x
--ntasks-per-node tasks; `srun` starts those tasks as local processes with each task's SLURM_PROCID,
SLURM_LOCALID and SLURM_NODEID (rendezvous on 127.0.0.1); `sacct` reports the states sbatch recorded; `scancel`
kills a job's processes at once (SIGKILL), as a cancelled or preempted job ends."""

import os
import sys
from pathlib import Path

SBATCH = r'''
import os, re, subprocess, sys
from pathlib import Path

here, script = Path(__file__).parent, Path(sys.argv[-1])
text = script.read_text()
flag = lambda name, default: (re.search(rf"#SBATCH --{name}=(\S+)", text) or [None, default])[1]
nodes, per_node = int(flag("nodes", 1)), int(flag("ntasks-per-node", 1))
first, *last = flag("array", "").split("%")[0].split("-") if flag("array", "") else ("", )
job = str(4200 + len(list(here.glob("sbatch_*.log"))))
(here / f"sbatch_{job}.log").touch()
variables = {"SLURM_JOB_NAME": flag("job-name", "job"), "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes),
             "SLURM_NTASKS": str(nodes * per_node), "SLURM_NTASKS_PER_NODE": str(per_node),
             "SLURM_TASKS_PER_NODE": f"{per_node}(x{nodes})", "SLURM_JOB_NODELIST": "localhost",
             "SLURM_NODELIST": "localhost"}
indices = range(int(first), int(last[0] if last else first) + 1) if first else [None]
names = [job if index is None else f"{job}_{index}" for index in indices]
for name in names:
    (here / f"state_{name}").write_text("RUNNING")
print(f"Submitted batch job {job}", flush=True)
if os.fork() == 0:  # the job runs on after sbatch returns, as submitit expects (it then writes the job's files)
    os.setsid()  # the job's processes: one group, which scancel kills
    (here / f"job_{job}.pid").write_text(str(os.getpid()))
    log = os.open(here / f"sbatch_{job}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1), os.dup2(log, 2)
    for index, name in zip(indices, names):
        array = {} if index is None else {"SLURM_ARRAY_JOB_ID": job, "SLURM_ARRAY_TASK_ID": str(index)}
        env = {**os.environ, **variables, **array, "SLURM_JOB_ID": job if index is None else f"{job}{index + 1}"}
        status = subprocess.call(["bash", str(script)], env=env)
        (here / f"state_{name}").write_text("COMPLETED" if status == 0 else "FAILED")
    os._exit(0)
'''

SRUN = r'''
import os, socket, subprocess, sys

args, files = sys.argv[1:], {}
while args[0].startswith("-"):
    option = args.pop(0)
    if option in ("--output", "--error"):
        files[option] = args.pop(0)
tasks, per_node = int(os.environ["SLURM_NTASKS"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
with socket.socket() as free:
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
processes = []
for rank in range(tasks):
    name = lambda pattern: (pattern.replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", str(rank))
                            .replace("%A", os.environ.get("SLURM_ARRAY_JOB_ID", "")).replace("%a", os.environ.get("SLURM_ARRAY_TASK_ID", "")))
    output = open(name(files["--output"]), "a")
    error = open(name(files["--error"]), "a") if "--error" in files else output
    env = {**os.environ, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % per_node),
           "SLURM_NODEID": str(rank // per_node), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    processes.append(subprocess.Popen(args, env=env, stdout=output, stderr=error))
sys.exit(max(process.wait() for process in processes))
'''

SACCT = r'''
import sys
from pathlib import Path

here = Path(__file__).parent
print("JobID|State|NodeList")
for job in sys.argv[sys.argv.index("-j") + 1::2]:
    for state in sorted(here.glob(f"state_{job}*")):
        print(f"{state.name[6:]}|{state.read_text()}|localhost")
'''


SCANCEL = r'''
import os, signal, sys
from pathlib import Path

here = Path(__file__).parent
for job in sys.argv[1:]:
    job = job.split("_")[0]
    for state in here.glob(f"state_{job}*"):
        state.write_text("CANCELLED")
    os.killpg(int((here / f"job_{job}.pid").read_text()), signal.SIGKILL)
'''


def install(bin_dir: Path) -> dict:
    """Write sbatch, srun, sacct and scancel into `bin_dir`; returns an environment that finds them first on
    PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("sbatch", SBATCH), ("srun", SRUN), ("sacct", SACCT), ("scancel", SCANCEL)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
