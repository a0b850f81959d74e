"""A single-node Slurm for the tests (tests/test_slurm.py): munged as the munge user with a fresh key, then
slurmctld and slurmd as root, in a private folder, on free ports; stopped by their own process ids."""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DAEMONS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'scontrol', 'squeue', 'scancel')


def why_not():
    """None where a single-node Slurm can be started here, else the reason it cannot."""
    missing = [name for name in DAEMONS if shutil.which(name) is None and not os.path.exists(f'/usr/sbin/{name}')]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing; .ci/run installs Debian's slurm-wlm and "
                f"munge with apt-get)")
    if os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged needs root"
    try:
        pwd.getpwnam('munge')
    except KeyError:
        return "no 'munge' user (the munge package makes it)"
    return None


def _exe(name):
    return shutil.which(name) or f'/usr/sbin/{name}'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


CONF = """ClusterName=kdzootest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
KillWait=5
MinJobAge=600
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """``env``: the environment in which sbatch, squeue, scontrol and scancel talk to this cluster."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix='kdzoo-slurm-')
        os.chmod(self.root, 0o755)  # munged, as the munge user, reaches its own sub-folder
        self.procs = []
        self.env = dict(os.environ, SLURM_CONF=os.path.join(self.root, 'slurm.conf'))

    def start(self, timeout=60):
        munge = os.path.join(self.root, 'munge')
        os.makedirs(munge)
        os.chmod(munge, 0o711)  # clients (root) reach the socket
        user = pwd.getpwnam('munge')
        key = os.path.join(munge, 'munge.key')
        with open(key, 'wb') as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        for path in (munge, key):
            os.chown(path, user.pw_uid, user.pw_gid)
        sock = os.path.join(munge, 'munge.socket')
        self._spawn([_exe('munged'), '--foreground', '--force', f'--key-file={key}',
                     f'--socket={sock}', f'--pid-file={munge}/munged.pid', f'--log-file={munge}/munged.log',
                     f'--seed-file={munge}/munged.seed'], 'munged', user)
        self._wait(lambda: os.path.exists(sock), timeout, 'munged')
        for folder in ('state', 'spool'):
            os.makedirs(os.path.join(self.root, folder))
        with open(self.env['SLURM_CONF'], 'w') as f:
            f.write(CONF.format(host=socket.gethostname().split('.')[0], socket=sock, ctld_port=_free_port(),
                                d_port=_free_port(), root=self.root, cpus=os.cpu_count()))
        conf = self.env['SLURM_CONF']
        self._spawn([_exe('slurmctld'), '-D', '-i', '-f', conf], 'slurmctld')
        self._spawn([_exe('slurmd'), '-D', '-f', conf], 'slurmd')
        self._wait(self._node_up, timeout, 'slurmd')
        return self

    def _spawn(self, command, name, user=None):
        as_user = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[]) if user else {}
        with open(os.path.join(self.root, f'{name}.out'), 'w') as log:
            self.procs.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                      start_new_session=True, **as_user)))

    def _node_up(self):
        out = subprocess.run(['sinfo', '-h', '-o', '%t'], env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() in ('idle', 'mix', 'alloc')

    def _wait(self, ready, timeout, name):
        end = time.monotonic() + timeout
        while not ready():
            for label, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{label} exited with status {proc.returncode}: {self.logs()}")
            if time.monotonic() > end:
                raise RuntimeError(f"{name} did not come up in {timeout} s: {self.logs()}")
            time.sleep(0.2)

    def logs(self):
        text = []
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if name.endswith(('.log', '.out')) and os.path.isfile(path):
                text.append(f"--- {name}\n" + open(path, errors='replace').read()[-3000:])
        return '\n'.join(text)

    def stop(self):
        """SIGTERM to each daemon by its own process id (slurmd, slurmctld, then munged), SIGKILL after 10 s."""
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs = []
        shutil.rmtree(self.root, ignore_errors=True)
