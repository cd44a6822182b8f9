"""The benches' shared plumbing. A bench finds it by putting bench/ on sys.path:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
    from harness.meta import machine, versions
    from harness.run import Child, GUARD, append_results, ...

- meta.py: machine(), versions(), free_port(), callgrind_total(), codec_module()
- run.py: child processes (start, ready, stop by PID), the memory guard, the
  results file; it re-exports procfs.py's /proc readings (RSS, CPU time, fds,
  children), which a client process imports alone to stay lean
- servers.py: the echo servers (a script: ``python bench/harness/servers.py NAME --port P``)
- client.py: the echo client of echo.py and uvicorn_echo.py (and client_frame)
"""
