"""The package version, in a module of its own: any layer reads it without importing the
package root (whose imports would make a cycle of every module that records the version)."""

__version__ = "0.1.0"
