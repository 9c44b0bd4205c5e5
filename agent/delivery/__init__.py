"""The delivery process: each output's loop over the journal (``runner``), the process's main
(``process``), how the main process forks, watches and restarts it (``supervisor``), the retry
schedule (``retry``), and the snapshot it writes for the monitor (``snapshot``)."""
