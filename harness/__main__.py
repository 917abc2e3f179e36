from harness.cli import main

if __name__ == "__main__":  # spawned processes (demo generator, --devices ranks) import this module too
    raise SystemExit(main())
