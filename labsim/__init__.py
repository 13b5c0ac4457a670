"""labsim"""
