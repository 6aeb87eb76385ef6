"""docker-py's whole create surface, directly and through a gateway whose hook reads every
create body: each argument of create_host_config and create_container must behave the same
both ways (the same success or error, and the same container as the daemon records it).

Run by tests/policy.rs as: python3 create_surface.py DIRECT_SOCKET GATEWAY_SOCKET IMAGE TMPDIR
Prints one line per case that differs, then "N cases, M differ"; exits 1 if any differ.
"""
import json
import sys

import docker
from docker import types

direct_sock, gateway_sock, image, tmp = sys.argv[1:5]
direct = docker.APIClient(base_url="unix://" + direct_sock, version="1.41")
gateway = docker.APIClient(base_url="unix://" + gateway_sock, version="1.41")

# (name, create_host_config kwargs, create_container kwargs)
HOST = [
    ("binds", {"binds": [tmp + ":/x:ro"]}, {}),
    ("port_bindings", {"port_bindings": {80: 8080}}, {"ports": [80]}),
    ("lxc_conf", {"lxc_conf": {"lxc.utsname": "x"}}, {}),
    ("publish_all_ports", {"publish_all_ports": True}, {"ports": [80]}),
    ("links", {"links": {"nosuchcontainer": "alias"}}, {}),
    ("privileged", {"privileged": True}, {}),
    ("dns", {"dns": ["192.0.2.53"]}, {}),
    ("dns_search", {"dns_search": ["example.test"]}, {}),
    ("volumes_from", {"volumes_from": ["nosuchcontainer"]}, {}),
    ("network_mode", {"network_mode": "none"}, {}),
    ("restart_policy", {"restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3}}, {}),
    ("cap_add", {"cap_add": ["NET_ADMIN"]}, {}),
    ("cap_drop", {"cap_drop": ["MKNOD"]}, {}),
    ("devices", {"devices": ["/dev/null:/dev/xnull:rwm"]}, {}),
    ("extra_hosts", {"extra_hosts": {"h.example.test": "192.0.2.1"}}, {}),
    ("read_only", {"read_only": True}, {}),
    ("pid_mode", {"pid_mode": "host"}, {}),
    ("ipc_mode", {"ipc_mode": "shareable"}, {}),
    ("security_opt", {"security_opt": ["no-new-privileges"]}, {}),
    ("ulimits", {"ulimits": [types.Ulimit(name="nofile", soft=1024, hard=2048)]}, {}),
    ("log_config", {"log_config": types.LogConfig(type="json-file", config={"max-size": "1m"})}, {}),
    ("mem_limit", {"mem_limit": "64m"}, {}),
    ("memswap_limit", {"mem_limit": "64m", "memswap_limit": "128m"}, {}),
    ("mem_reservation", {"mem_reservation": "32m"}, {}),
    ("kernel_memory", {"kernel_memory": "64m"}, {}),
    ("mem_swappiness", {"mem_swappiness": 10}, {}),
    ("cgroup_parent", {"cgroup_parent": "luastrip-test.slice"}, {}),
    ("group_add", {"group_add": ["100"]}, {}),
    ("cpu_quota", {"cpu_quota": 50000}, {}),
    ("cpu_period", {"cpu_period": 100000}, {}),
    ("blkio_weight", {"blkio_weight": 500}, {}),
    ("blkio_weight_device", {"blkio_weight_device": [{"Path": "/dev/null", "Weight": 10}]}, {}),
    ("device_read_bps", {"device_read_bps": [{"Path": "/dev/null", "Rate": 1000}]}, {}),
    ("device_write_bps", {"device_write_bps": [{"Path": "/dev/null", "Rate": 1000}]}, {}),
    ("device_read_iops", {"device_read_iops": [{"Path": "/dev/null", "Rate": 100}]}, {}),
    ("device_write_iops", {"device_write_iops": [{"Path": "/dev/null", "Rate": 100}]}, {}),
    ("oom_kill_disable", {"oom_kill_disable": True}, {}),
    ("shm_size", {"shm_size": "32m"}, {}),
    ("sysctls", {"sysctls": {"net.core.somaxconn": "1024"}}, {}),
    ("tmpfs", {"tmpfs": {"/t": "size=1m"}}, {}),
    ("oom_score_adj", {"oom_score_adj": 100}, {}),
    ("dns_opt", {"dns_opt": ["ndots:2"]}, {}),
    ("cpu_shares", {"cpu_shares": 512}, {}),
    ("cpuset_cpus", {"cpuset_cpus": "0"}, {}),
    ("userns_mode", {"userns_mode": "host"}, {}),
    ("uts_mode", {"uts_mode": "host"}, {}),
    ("pids_limit", {"pids_limit": 100}, {}),
    ("isolation", {"isolation": "default"}, {}),
    ("auto_remove", {"auto_remove": True}, {}),
    ("storage_opt", {"storage_opt": {"size": "1G"}}, {}),
    ("init", {"init": True}, {}),
    ("init_path", {"init_path": "/usr/bin/docker-init"}, {}),
    ("volume_driver", {"volume_driver": "local"}, {"volumes": ["/v"]}),
    ("cpu_count", {"cpu_count": 1}, {}),
    ("cpu_percent", {"cpu_percent": 50}, {}),
    ("nano_cpus", {"nano_cpus": 500000000}, {}),
    ("cpuset_mems", {"cpuset_mems": "0"}, {}),
    ("runtime", {"runtime": "runc"}, {}),
    ("mounts", {"mounts": [types.Mount("/m", "luastrip-dockerpy-vol")]}, {}),
    ("cpu_rt_period", {"cpu_rt_period": 1000000}, {}),
    ("cpu_rt_runtime", {"cpu_rt_runtime": 1000}, {}),
    ("device_cgroup_rules", {"device_cgroup_rules": ["c 1:3 rwm"]}, {}),
    ("device_requests", {"device_requests": [types.DeviceRequest(count=-1, capabilities=[["gpu"]])]}, {}),
]

CONTAINER = [
    ("command", {"command": ["echo", "x"]}),
    ("hostname", {"hostname": "h"}),
    ("user", {"user": "nobody"}),
    ("detach", {"detach": True}),
    ("stdin_open", {"stdin_open": True}),
    ("tty", {"tty": True}),
    ("ports", {"ports": [80, (53, "udp")]}),
    ("environment", {"environment": {"A": "b", "PASSWORD": "x"}}),
    ("volumes", {"volumes": ["/v"]}),
    ("network_disabled", {"network_disabled": True}),
    ("entrypoint", {"entrypoint": ["sh", "-c"]}),
    ("working_dir", {"working_dir": "/w"}),
    ("domainname", {"domainname": "example.test"}),
    ("mac_address", {"mac_address": "02:42:ac:11:00:02"}),
    ("labels", {"labels": {"a": "b", "Privileged": "true"}}),
    ("stop_signal", {"stop_signal": "SIGKILL"}),
    ("healthcheck", {"healthcheck": {"test": ["CMD", "true"], "interval": 1000000000}}),
    ("stop_timeout", {"stop_timeout": 5}),
    # docker-py puts this one at the top level of the body, beside HostConfig.
    ("runtime (create_container)", {"runtime": "runc"}),
]


def attempt(client, hc, cc):
    """Create a container as docker-py does; what the daemon recorded, or the error."""
    try:
        kw = dict(cc)
        if hc is not None:
            kw["host_config"] = client.create_host_config(**hc)
        c = client.create_container(image, **kw)
    except docker.errors.APIError as e:
        return ("error", e.response.status_code, str(e.explanation))
    except Exception as e:  # docker-py refused it before sending: the same both ways
        return ("client", type(e).__name__, str(e))
    try:
        info = direct.inspect_container(c["Id"])
    finally:
        direct.remove_container(c["Id"], force=True)
    config = info["Config"]
    if "hostname" not in cc:
        config.pop("Hostname", None)
    return ("created", config, info["HostConfig"])


cases = [(n, hc, cc) for n, hc, cc in HOST] + [(n, {}, cc) for n, cc in CONTAINER]
differ = 0
for name, hc, cc in cases:
    a = attempt(direct, hc, cc)
    b = attempt(gateway, hc, cc)
    if a != b:
        differ += 1
        print("DIFFERS %s:\n  direct:  %s\n  gateway: %s" % (name, json.dumps(a, default=str)[:600], json.dumps(b, default=str)[:600]))
    else:
        print("same %s: %s" % (name, a[0]))
try:
    direct.remove_volume("luastrip-dockerpy-vol")
except docker.errors.APIError:
    pass
print("%d cases, %d differ" % (len(cases), differ))
sys.exit(1 if differ else 0)
