"""Local mode: a job's rendered pods run as processes on this machine, judged by the operator's own
status code (`ti.operator.status`), so a laptop and a cluster cannot drift apart."""
