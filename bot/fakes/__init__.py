"""Local stand-ins for the Hugging Face Hub and Discord, for tests and demos.

They keep their own copy of the real services' limits and rules: importing production constants
would let a wrong limit pass unnoticed.
"""
