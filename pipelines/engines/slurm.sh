#!/usr/bin/env bash
# A one-host SLURM cluster: Debian's slurm-wlm (slurmctld + slurmd), munge for authentication, and
# slurmdbd on MariaDB for accounting. Everything lives under $ENGINES_DIR/slurm: configuration,
# munge key and socket, database, state, spool, logs and pid files. Needs root (`make slurm-up`
# goes through sudo otherwise): slurmd starts jobs as their users.
#
#   pipelines/engines/slurm.sh up      # install (apt-get) if missing, configure once, start the daemons
#   pipelines/engines/slurm.sh env     # the line to eval in a shell that submits: export SLURM_CONF=...
#   pipelines/engines/slurm.sh down    # stop them all (the configuration, accounting and state stay)
#
# Accounting is not optional for submitit: it follows each job with `sacct`, and without
# accounting a job that ends without its result file (cancelled, killed) is never seen to end,
# so the launcher waits for it forever. slurmdbd only stores into MySQL/MariaDB.
#
# Ports (SLURM_PORT_BASE, default 6817): slurmctld BASE, slurmd BASE+1, slurmdbd BASE+2,
# MariaDB BASE+3, all on this host; a second cluster (tests) takes another base and folder.
set -euo pipefail
source "$(dirname "$0")/common.sh"

DIR="$ENGINES_DIR/slurm"
BASE="${SLURM_PORT_BASE:-6817}"
CTLD_PORT=$BASE SLURMD_PORT=$((BASE + 1)) DBD_PORT=$((BASE + 2)) DB_PORT=$((BASE + 3))
CLUSTER=hybridsweep
NODE="$(hostname -s)"
export SLURM_CONF="$DIR/slurm.conf"
# munged wants its key readable by itself alone and its socket's folder open to everyone.
MUNGE_KEY="$DIR/munge-key/munge.key"
MUNGE_SOCKET="$DIR/munge/munge.socket"

require_root() {
    [ "$(id -u)" = 0 ] || { echo "$0 starts slurmd, which runs jobs as their users: run it as root (make slurm-up uses sudo)" >&2; exit 1; }
}

install() {
    apt_install /usr/sbin/slurmctld slurm-wlm munge
    apt_install /usr/sbin/slurmdbd slurmdbd
    apt_install /usr/sbin/mariadbd mariadb-server
}

configure() {
    mkdir -p "$DIR"/{munge-key,munge,state,spool,log,run}
    chmod 700 "$DIR/munge-key"
    chmod 755 "$DIR" "$DIR/munge"
    if [ ! -f "$MUNGE_KEY" ]; then
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        chmod 400 "$MUNGE_KEY"
    fi
    # The node's hardware as slurmd sees it (CPUs, sockets, cores, memory): a node that claims
    # more than it has is drained.
    local hardware; hardware="$(slurmd -C | head -1)"
    cat >"$DIR/slurm.conf" <<EOF
# Written by pipelines/engines/slurm.sh: a one-host cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# Processes are tracked by their parent ids and bound to their job's CPUs (sched_setaffinity, which
# the points read their thread count from): no cgroup hierarchy needed.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SchedulerType=sched/backfill
# CPUs are what jobs are scheduled by; memory is requested but not enforced.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# For slurmdbd connections this names the munge socket (AuthInfo covers the others).
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# A cancelled job's processes get SIGTERM, then SIGKILL this many seconds later.
KillWait=5
MinJobAge=300
$hardware State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/slurmdbd.conf" <<EOF
# Written by pipelines/engines/slurm.sh: accounting into the MariaDB under $DIR/mysql.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

start_munge() {
    [ -f "$DIR/run/munged.pid" ] && kill -0 "$(cat "$DIR/run/munged.pid")" 2>/dev/null && return 0
    munged --force --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge-key/munged.seed"
    wait_for munged 20 bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
}

start_mariadb() {
    # The server runs as Debian's mysql user: its data, socket, pid and log files are that user's.
    local db="$DIR/mysql"
    [ -f "$db/mariadbd.pid" ] && kill -0 "$(cat "$db/mariadbd.pid")" 2>/dev/null && return 0
    mkdir -p "$db"
    chown mysql: "$db"
    if [ ! -d "$db/data/mysql" ]; then
        mariadb-install-db --user=mysql --datadir="$db/data" --auth-root-authentication-method=socket \
            --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
            || { echo "mariadb-install-db failed (is $db open to the mysql user?): $DIR/log/mariadb-install.log" >&2; return 1; }
    fi
    # A small server: accounting of a few jobs needs little memory.
    mariadbd --user=mysql --datadir="$db/data" --socket="$db/mysql.sock" --pid-file="$db/mariadbd.pid" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --log-error="$db/mariadb.log" \
        --innodb-buffer-pool-size=32M --innodb-log-file-size=16M --performance-schema=OFF >>"$DIR/log/mariadb-start.log" 2>&1 &
    wait_for MariaDB 60 mariadb-admin --socket="$db/mysql.sock" ping
    mariadb --socket="$db/mysql.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_daemon() {  # NAME COMMAND...: start unless its pid file names a live process
    local name="$1"; shift
    [ -f "$DIR/run/$name.pid" ] && kill -0 "$(cat "$DIR/run/$name.pid")" 2>/dev/null && return 0
    "$@"
}

up() {
    require_root
    install
    configure
    trap 'echo "$0 up failed; stopping what it started (logs: $DIR/log)" >&2; down' ERR
    start_munge
    start_mariadb
    # slurmdbd reads slurmdbd.conf beside $SLURM_CONF.
    start_daemon slurmdbd slurmdbd
    wait_for slurmdbd 60 sacctmgr -n show cluster
    local clusters; clusters="$(sacctmgr -n -P show cluster format=cluster)"
    grep -qx "$CLUSTER" <<<"$clusters" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    start_daemon slurmctld slurmctld -f "$SLURM_CONF"
    wait_for slurmctld 60 scontrol ping
    start_daemon slurmd slurmd -f "$SLURM_CONF" -N "$NODE"
    wait_for "slurmd (node $NODE idle)" 60 bash -c "sinfo -h -n '$NODE' -o %t | grep -qx idle"
    echo "export SLURM_CONF=$SLURM_CONF"
}

down() {
    for name in slurmd slurmctld slurmdbd; do
        stop_pidfile "$DIR/run/$name.pid"
    done
    stop_pidfile "$DIR/mysql/mariadbd.pid"
    stop_pidfile "$DIR/run/munged.pid"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
