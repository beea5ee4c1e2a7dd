# A spotstack node image: Ubuntu 24.04, the NVIDIA driver, Docker and NVIDIA's container toolkit, and the agent of
# the spotstack that deploys the fleet. Nodes booted from it install nothing (no package index, no bucket fetch).
#
#   spotstack bake --cloud aws --out bake            # bake.sh and the agent's wheel, for this spotstack
#   packer init examples/bake && packer build -only 'amazon-ebs.node' -var bake_dir=bake examples/bake
#
# then set the fleet's `machine_image` to the image it prints. Bake again with each spotstack upgrade: a node whose
# image holds another agent than the deploying one installs the deploying one at boot (as an unbaked node does).
# Build on a GPU instance type: `ubuntu-drivers` picks the driver for the GPU it finds.

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = ">= 1.1.0"
    }
    alicloud = {
      source  = "github.com/hashicorp/alicloud"
      version = ">= 1.1.0"
    }
  }
}

variable "bake_dir" {
  type        = string
  description = "The folder `spotstack bake --out` wrote (bake.sh and the agent's wheel)."
  default     = "bake"
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "gcp_project" {
  type    = string
  default = ""
}

variable "gcp_zone" {
  type    = string
  default = "us-central1-a"
}

source "amazon-ebs" "node" {
  region        = var.region
  instance_type = "g5.xlarge"
  ami_name      = "spotstack-node-{{timestamp}}"
  ssh_username  = "ubuntu"
  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["099720109477"] # Canonical
    most_recent = true
  }
  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 100
    volume_type           = "gp3"
    delete_on_termination = true
  }
}

source "googlecompute" "node" {
  project_id          = var.gcp_project
  zone                = var.gcp_zone
  source_image_family = "ubuntu-2404-lts-amd64"
  machine_type        = "g2-standard-4"
  accelerator_type    = "projects/${var.gcp_project}/zones/${var.gcp_zone}/acceleratorTypes/nvidia-l4"
  accelerator_count   = 1
  on_host_maintenance = "TERMINATE"
  disk_size           = 100
  image_name          = "spotstack-node-{{timestamp}}"
  ssh_username        = "ubuntu"
}

source "alicloud-ecs" "node" {
  region               = var.region
  instance_type        = "ecs.gn7i-c8g1.2xlarge"
  image_family         = "acs:ubuntu_24_04_x64"
  image_name           = "spotstack-node-{{timestamp}}"
  ssh_username         = "root"
  internet_charge_type = "PayByTraffic"
  io_optimized         = true
  system_disk_mapping {
    disk_size = 100
  }
}

build {
  sources = ["source.amazon-ebs.node", "source.googlecompute.node", "source.alicloud-ecs.node"]

  # The file provisioner uploads a folder's contents into a folder that must exist.
  provisioner "shell" {
    inline = ["mkdir -p /tmp/spotstack-bake"]
  }
  provisioner "file" {
    source      = "${var.bake_dir}/"
    destination = "/tmp/spotstack-bake"
  }
  provisioner "shell" {
    execute_command = "sudo sh -c '{{ .Vars }} {{ .Path }}'"
    script          = "${var.bake_dir}/bake.sh"
  }
}
