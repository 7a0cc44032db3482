"""Run tags the file-sensor chain passes from run to run.

source_files_sensor  -> discover_job (TRIGGER, TOUCHED: the shards it touched)
ingest_sensor        -> discover_job (TRIGGER, TOUCHED, INGEST_JOB: the HTTP ingest job id)
discover_done_sensor -> cpu_job / gpu_job for those shards' partitions with work (CHAIN)
analysis_done_sensor -> publish_job once every run of the CHAIN has finished
"""

TRIGGER = "rag/trigger"
TOUCHED = "rag/touched_shards"
CHAIN = "rag/chain"
INGEST_JOB = "rag/ingest_job"
