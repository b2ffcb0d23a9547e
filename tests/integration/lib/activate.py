"""A stand-in for systemd's socket activation, for the tests.

Binds a listening TCP socket on 127.0.0.1 (a free port), prints
{"port": N}, then reads commands on stdin, one per line:
  start ARGV-JSON   fork; the child gets the socket as fd 3 with
                    LISTEN_FDS=1 and LISTEN_PID=<its pid> (sd_listen_fds(3))
                    and execs ARGV; prints {"started": pid}
  stop              SIGTERM to the child, wait; prints {"exited": code}
The socket stays open here across restarts, as systemd keeps it, so a
connection that arrives between two daemons waits in the backlog.
"""
import json
import os
import signal
import socket
import sys

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(4096)
print(json.dumps({"port": sock.getsockname()[1]}), flush=True)

child = None
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "start":
        argv = json.loads(arg)
        pid = os.fork()
        if pid == 0:
            # stdout is the pipe to the test: the daemon must not hold it
            # (its log goes to stderr as it does under systemd).
            os.dup2(2, 1)
            os.dup2(sock.fileno(), 3)
            os.set_inheritable(3, True)
            env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
            os.execve(argv[0], argv, env)
        child = pid
        print(json.dumps({"started": pid}), flush=True)
    elif cmd == "stop" and child:
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
        child = None
        print(json.dumps({"exited": os.waitstatus_to_exitcode(status)}), flush=True)
if child:
    os.kill(child, signal.SIGKILL)
