variable "project" {
  description = "Google Cloud project ID."
  type        = string
}

variable "region" {
  description = "Region of the bucket, the repository and the functions."
  type        = string
  default     = "us-central1"
}

variable "bucket_name" {
  description = "Artifacts bucket: upload files, then an artificer.json spec."
  type        = string
}

variable "repository_id" {
  description = "Artifact Registry Docker repository the function pushes to."
  type        = string
  default     = "images"
}

variable "extra_allowed_targets" {
  description = "More repository prefixes the function may push to, besides the repository created here."
  type        = list(string)
  default     = []
}

variable "rebuild_prefix" {
  description = "Folder (in the artifacts bucket) whose specs are rebuilt when their base image tag changes."
  type        = string
  default     = ""
}

variable "max_event_age_seconds" {
  description = "A temporary failure of an event older than this is recorded as failed instead of retried; an event older than this whose last attempt did not finish is settled without a build. At least 300 (the function refuses less: every event would fail)."
  type        = number
  default     = 3600

  validation {
    condition     = var.max_event_age_seconds >= 300
    error_message = "max_event_age_seconds must be at least 300 (above the function's 3-minute grace for files uploaded after their spec)."
  }
}

variable "scheduled_rebuilds" {
  description = "Specs to rebuild on a schedule: name => { spec = object name in the bucket, schedule = cron in UTC }, e.g. { web = { spec = \"web/artificer.json\", schedule = \"0 3 * * *\" } }."
  type = map(object({
    spec     = string
    schedule = string
  }))
  default = {}
}

variable "function_cpu" {
  description = "vCPUs of each function instance. A build compresses its layer on every core it has (parallel gzip members); at 512Mi Cloud Run would otherwise give 0.333 vCPU, several times slower for a big layer. 2 vCPUs take from 128 MiB to 8 GiB of memory."
  type        = string
  default     = "2"
}

variable "max_instance_count" {
  description = "Most instances of each function at once. Each takes one event at a time, so this bounds the builds running together (and what a burst of uploads or a base-image fan-out costs)."
  type        = number
  default     = 10
}
