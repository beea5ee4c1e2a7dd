"""The component provider Pulumi runs for `pulumi package add`: it serves spotstack:index:GpuFleet."""

from spotstack.components.provider import main

if __name__ == "__main__":
    main()
