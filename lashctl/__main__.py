"""``python -m lashctl``."""

from lashctl import main

if __name__ == "__main__":
    main(prog_name="lashctl")
