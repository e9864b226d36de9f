#!/bin/sh
# Stand-in for ssh (EXEDEV_K8S_SSH) while the emulator's VMs run no setup
# scripts: answers like a VM whose bootstrap finished, so apply's server
# ordering (it reads each server's bootstrap state over SSH) and the
# Tailscale logout before rm have something to talk to. Against exe.dev the
# real ssh is used; never point EXEDEV_K8S_SSH at this there.
case "$*" in
  *bootstrap-state*) printf 'state: done\nstep: \n' ;;
  *"tailscale logout"*) ;;
  *) echo "ssh stand-in: no real VM behind: $*" >&2; exit 1 ;;
esac
