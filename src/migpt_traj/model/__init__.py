"""migpt_traj.model"""
