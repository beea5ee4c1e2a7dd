"""Jobs on spot: tasks from a queue, run by a worker in the node agent, results to an output queue."""
