"""``python -m collab`` runs the same CLI as the ``collab`` console script."""

from collab.cli import main

if __name__ == "__main__":
    main()
