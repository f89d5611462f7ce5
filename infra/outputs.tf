output "bucket" {
  value = google_storage_bucket.artifacts.name
}

output "repository" {
  value = local.repository_path
}

output "rebuild_topic" {
  value = google_pubsub_topic.rebuild.id
}

output "service_account" {
  value = google_service_account.builder.email
}

output "build_service_account" {
  value = google_service_account.build.email
}
