locals {
  registry_host   = "${var.region}-docker.pkg.dev"
  repository_path = "${local.registry_host}/${var.project}/${var.repository_id}/"
  function_env = {
    ARTIFICER_ALLOWED_TARGETS = join(",", concat([local.repository_path], var.extra_allowed_targets))
    ARTIFICER_REBUILD_PREFIX  = "gs://${google_storage_bucket.artifacts.name}/${var.rebuild_prefix}"
    ARTIFICER_REBUILD_TOPIC   = google_pubsub_topic.rebuild.id
    ARTIFICER_MAX_EVENT_AGE   = tostring(var.max_event_age_seconds)
  }
}

data "google_project" "this" {}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudfunctions.googleapis.com",
    "eventarc.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

resource "google_storage_bucket" "artifacts" {
  name                        = var.bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
}

resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = var.repository_id
  format        = "DOCKER"
  depends_on    = [google_project_service.apis]
}

# The identity the functions run as: reads the bucket, writes records on spec objects, pushes
# to the one repository, queues spec rebuilds on the rebuild topic. Nothing else.
resource "google_service_account" "builder" {
  account_id   = "artificer-builder"
  display_name = "artificer Cloud Function"
}

# objectUser = read objects + update their metadata (the record); no bucket-level admin.
resource "google_storage_bucket_iam_member" "builder_objects" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_artifact_registry_repository_iam_member" "builder_push" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.builder.email}"
}

# Eventarc delivers events to the functions as this same service account.
resource "google_project_iam_member" "builder_event_receiver" {
  project = var.project
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_cloud_run_service_iam_member" "builder_invokes_upload" {
  location = google_cloudfunctions2_function.build_on_upload.location
  service  = google_cloudfunctions2_function.build_on_upload.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_cloud_run_service_iam_member" "builder_invokes_rebuild" {
  location = google_cloudfunctions2_function.rebuild_on_message.location
  service  = google_cloudfunctions2_function.rebuild_on_message.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.builder.email}"
}

# Cloud Build builds the functions' images as this account (build_config.service_account), not
# as the default compute service account: since July 2024 new projects no longer grant that one
# the roles a build needs (https://cloud.google.com/build/docs/cloud-build-service-account-updates).
# Roles for a function's build service account, as Google lists them:
# https://cloud.google.com/functions/docs/securing/build-custom-sa and
# https://cloud.google.com/run/docs/configuring/services/build-service-account
# (the latter, the page for Cloud Run functions, names storage.objectAdmin: the build reads the
# source and writes its cache objects). Project-wide, because the places they apply to are Cloud Functions'
# own and made on the first deploy: the gcf-v2-sources-* bucket the source is copied to, the
# gcf-artifacts repository the image goes to. Whoever applies this needs
# iam.serviceAccountUser on this account (an owner has it).
resource "google_service_account" "build" {
  account_id   = "artificer-build"
  display_name = "artificer function builds (Cloud Build)"
}

resource "google_project_iam_member" "build_roles" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectAdmin"])
  project  = var.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.build.email}"
}

# Cloud Storage publishes the bucket's events to Pub/Sub for Eventarc.
data "google_storage_project_service_account" "gcs" {}

resource "google_project_iam_member" "gcs_pubsub_publisher" {
  project = var.project
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_pubsub_topic" "rebuild" {
  name = "artificer-rebuild"
}

# A base-image update fans out: one rebuild message per affected spec, on the rebuild topic.
resource "google_pubsub_topic_iam_member" "builder_queues_rebuilds" {
  topic  = google_pubsub_topic.rebuild.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.builder.email}"
}

# Artifact Registry publishes to a topic named "gcr" in the project when images change.
resource "google_pubsub_topic" "gcr" {
  name = "gcr"
}

# Source: the repository root minus tests, tooling and local scratch (the same set .gcloudignore
# leaves out; names, not globs, so any archive provider >= 2.4 reads them alike). The Node.js
# buildpack installs dependencies and runs the `gcp-build` script (npm run build) to produce
# dist/, which package.json `main` points at.
data "archive_file" "source" {
  type        = "zip"
  source_dir  = "${path.module}/.."
  output_path = "${path.module}/.build/artificer-source.zip"
  excludes = [
    ".git", ".gitignore", ".gcloudignore", ".ab", ".ci", ".tmp", ".build", "node_modules", "dist",
    "test", "bench", "examples", "infra", "scripts", "docs", "README.md",
  ]
}

resource "google_storage_bucket" "sources" {
  name                        = "${var.project}-artificer-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
}

resource "google_storage_bucket_object" "source" {
  name   = "artificer-${data.archive_file.source.output_md5}.zip"
  bucket = google_storage_bucket.sources.name
  source = data.archive_file.source.output_path
}

resource "google_cloudfunctions2_function" "build_on_upload" {
  name     = "artificer-build-on-upload"
  location = var.region

  build_config {
    runtime         = "nodejs24"
    entry_point     = "buildOnUpload"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = "512Mi"
    available_cpu                    = var.function_cpu
    timeout_seconds                  = 540
    max_instance_count               = var.max_instance_count
    max_instance_request_concurrency = 1
    service_account_email            = google_service_account.builder.email
    environment_variables            = local.function_env
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
  }

  event_trigger {
    event_type            = "google.cloud.storage.object.v1.finalized"
    retry_policy          = "RETRY_POLICY_RETRY"
    trigger_region        = var.region
    service_account_email = google_service_account.builder.email
    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.artifacts.name
    }
  }

  depends_on = [google_project_service.apis, google_project_iam_member.gcs_pubsub_publisher, google_project_iam_member.build_roles]
}

resource "google_cloudfunctions2_function" "rebuild_on_message" {
  name     = "artificer-rebuild-on-message"
  location = var.region

  build_config {
    runtime         = "nodejs24"
    entry_point     = "rebuildOnMessage"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = "512Mi"
    available_cpu                    = var.function_cpu
    timeout_seconds                  = 540
    max_instance_count               = var.max_instance_count
    max_instance_request_concurrency = 1
    service_account_email            = google_service_account.builder.email
    environment_variables            = local.function_env
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
  }

  event_trigger {
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.rebuild.id
    retry_policy          = "RETRY_POLICY_RETRY"
    trigger_region        = var.region
    service_account_email = google_service_account.builder.email
  }

  depends_on = [google_project_service.apis, google_project_iam_member.build_roles]
}

# Base-image patches: Artifact Registry's notifications (topic "gcr") trigger the same function.
resource "google_eventarc_trigger" "base_updates" {
  name            = "artificer-base-updates"
  location        = var.region
  service_account = google_service_account.builder.email

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.pubsub.topic.v1.messagePublished"
  }

  transport {
    pubsub {
      topic = google_pubsub_topic.gcr.id
    }
  }

  # Eventarc wants the Cloud Run service's short name; service_config[0].service is the full
  # resource name, projects/P/locations/R/services/NAME (Cloud Functions v2 API, ServiceConfig.service:
  # https://cloud.google.com/functions/docs/reference/rest/v2/projects.locations.functions#serviceconfig).
  destination {
    cloud_run_service {
      service = regex("[^/]+$", google_cloudfunctions2_function.rebuild_on_message.service_config[0].service)
      region  = var.region
    }
  }
}

# Scheduled refreshes (e.g. nightly, to pick up a patched base under the same tag): one Cloud
# Scheduler job per spec publishes {"bucket","object"} to the rebuild topic.
resource "google_cloud_scheduler_job" "rebuild" {
  for_each = var.scheduled_rebuilds

  name     = "artificer-rebuild-${each.key}"
  region   = var.region
  schedule = each.value.schedule
  pubsub_target {
    topic_name = google_pubsub_topic.rebuild.id
    data       = base64encode(jsonencode({ bucket = google_storage_bucket.artifacts.name, object = each.value.spec }))
  }

  depends_on = [google_project_service.apis]
}
