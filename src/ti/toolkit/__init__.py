"""What runs inside a training pod around the user's script: `fetch` (init container), the POSIX
launcher `launch.sh` (main container's command) and `upload` (second container)."""
